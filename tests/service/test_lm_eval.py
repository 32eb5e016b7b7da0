"""lm-evaluation-harness's `local-completions` model runs a log-likelihood task against the server.

`lm_eval run --model local-completions` (the real CLI, in a subprocess) scores the tiny
multiple-choice task in `lm_eval_task/` (its documents in a JSON lines file there: no hub) against
a real uvicorn serving the tiny RETRO model. lm-eval sends token-id prompts with `echo`,
`logprobs=1` and `max_tokens=1` and sums `token_logprobs` of each answer's tokens; it tokenizes
with the server's vLLM tokenizer endpoints (`tokenizer_backend=remote`) or with the RETRO model's
tokenizer saved as a Hugging Face tokenizer folder. Every log-likelihood it records
must be the one the server gives when asked to score the same tokens, and its accuracy theirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.service.conftest import live_server, make_settings

TASK_DIR = Path(__file__).parent / "lm_eval_task"
TASK = "retro_tiny_facts"


def save_hf_tokenizer(tokenizer, folder: Path) -> Path:
    """The RETRO tokenizer as a transformers tokenizer folder, which lm-eval's tokenizer loads."""
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer.from_str(tokenizer.to_json()), eos_token="<eos>", pad_token="<pad>"
    )
    fast.save_pretrained(str(folder))
    return folder


def server_loglikelihoods(base: str, tokenizer) -> list[list[float]]:
    """Each document's choices scored by the server itself (max_tokens=0: score only), as lm-eval's
    multiple choice splits them: context + " " + choice tokenised whole, the choice's tokens those
    after the context's."""
    docs = [json.loads(line) for line in (TASK_DIR / f"{TASK}.jsonl").read_text().splitlines()]
    scores = []
    for doc in docs:
        context = tokenizer.encode(doc["question"])
        scores.append([])
        for choice in doc["choices"]:
            whole = tokenizer.encode(doc["question"] + " " + choice)
            body = {"prompt": [whole], "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}
            choice_out = httpx.post(f"{base}/v1/completions", json=body, timeout=30).json()["choices"][0]
            scores[-1].append(sum(choice_out["logprobs"]["token_logprobs"][len(context) :]))
    return scores


@pytest.mark.parametrize("tokenizer_backend", ["huggingface", "remote"])
def test_lm_eval_local_completions_scores_a_log_likelihood_task(
    settings, tokenizer, tmp_path, tokenizer_backend
):
    # "remote": lm-eval tokenizes with the server's /tokenize; "huggingface": with a local folder
    tokenizer_args = ["tokenizer_backend=remote"]
    if tokenizer_backend == "huggingface":
        tokenizer_dir = save_hf_tokenizer(tokenizer, tmp_path / "tokenizer")
        tokenizer_args = ["tokenizer_backend=huggingface", f"tokenizer={tokenizer_dir}"]
    app = create_app(make_settings(**settings.model_dump()))
    with live_server(app) as base:
        model_args = ",".join(
            [
                "model=tiny-retro",
                f"base_url={base}/v1/completions",
                *tokenizer_args,
                "tokenized_requests=True",
                "max_length=112",  # the tiny model's prompt limit with retrieval
                "max_retries=1",
                "timeout=60",
            ]
        )
        command = [
            sys.executable, "-m", "lm_eval", "run", "--model", "local-completions",
            "--model_args", model_args, "--tasks", TASK, "--include_path", str(TASK_DIR), "--batch_size", "1",
            "--output_path", str(tmp_path / "results"), "--log_samples",
        ]  # fmt: skip
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(tmp_path / "hf"),
            "OPENAI_API_KEY": "unused",
            "OMP_NUM_THREADS": "1",
        }
        # The task's data_files path is relative: the harness runs in the task's folder.
        run = subprocess.run(command, cwd=TASK_DIR, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-4000:]
        expected = server_loglikelihoods(base, tokenizer)
    (results_file,) = (tmp_path / "results").glob("**/results_*.json")
    (samples_file,) = (tmp_path / "results").glob("**/samples_*.jsonl")
    samples = sorted(
        (json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"]
    )
    assert len(samples) == len(expected)
    for sample, scores in zip(samples, expected, strict=True):
        harness = [float(loglikelihood) for loglikelihood, _greedy in sample["filtered_resps"]]
        assert harness == pytest.approx(scores, abs=1e-3)
    accuracy = sum(max(range(len(s)), key=s.__getitem__) == 0 for s in expected) / len(expected)
    results = json.loads(results_file.read_text())["results"][TASK]
    assert results["acc,none"] == pytest.approx(accuracy)  # every document's answer is choice 0
    assert TASK in run.stdout and "acc" in run.stdout  # the table a user reads
