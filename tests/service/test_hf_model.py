"""retro.hf_model: a Hugging Face causal LM behind the one language-model interface (generate/stream)."""

from __future__ import annotations

import json

import pytest

from retro.hf_model import HFModelError, is_hf_model_folder, load_hf_model
from retro.language_model import PromptTooLongError
from retro.sampling import SamplingParams


@pytest.fixture(scope="module")
def hf(hf_model_dir):
    return load_hf_model(hf_model_dir)


def test_loads_offline_and_counts_parameters(hf, hf_model_dir):
    assert is_hf_model_folder(hf_model_dir) and hf.max_seq_len == 128
    counts = hf.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in hf.model.parameters())
    # GPT-2 embeddings: tokens x 32 + 128 positions x 32 (the LM head is tied to the token table).
    assert counts["total"] - counts["non_embedding"] == (len(hf.tokenizer) + 128) * 32


def test_generate_equals_joined_stream_and_seeds_repeat(hf):
    params = SamplingParams(max_new_tokens=12, temperature=0.8, seed=7)
    result = hf.generate("Mars is the fourth", params)
    pieces = list(hf.stream("Mars is the fourth", params))
    assert result.text == "".join(p.text for p in pieces)
    assert pieces[-1].finish_reason == result.finish_reason and all(
        p.finish_reason is None for p in pieces[:-1]
    )
    assert result.completion_tokens == sum(p.n_tokens for p in pieces) <= 12
    assert hf.generate("Mars is the fourth", params).text == result.text
    assert result.prompt_tokens == len(hf.tokenizer.encode("Mars is the fourth"))


def test_greedy_matches_a_full_recompute(hf):
    """KV-cached decoding picks the same tokens as argmax over a full forward at every step."""
    import torch

    ids = hf.tokenizer.encode("The violin has")
    expected = []
    with torch.no_grad():
        for _ in range(8):
            token = int(hf.model(input_ids=torch.tensor([ids + expected])).logits[0, -1].argmax())
            if token == hf.eos_id:
                break
            expected.append(token)
    result = hf.generate("The violin has", SamplingParams(max_new_tokens=8, temperature=0))
    assert result.text == hf.tokenizer.decode(expected, skip_special_tokens=True)


def test_stop_strings_and_limits(hf):
    full = hf.generate("Bread", SamplingParams(max_new_tokens=20, temperature=0)).text
    assert len(full) >= 3
    stop = full[1:3]
    stopped = hf.generate("Bread", SamplingParams(max_new_tokens=20, temperature=0, stop=(stop,)))
    assert stopped.finish_reason == "stop" and stop not in stopped.text and full.startswith(stopped.text)
    with pytest.raises(PromptTooLongError) as raised:
        hf.generate("word " * 300, SamplingParams(max_new_tokens=2))
    assert raised.value.limit == 127
    # Generation stops at the context end instead of overflowing the position table.
    long_prompt = "a " * 60
    n_prompt = len(hf.tokenizer.encode(long_prompt))
    result = hf.generate(long_prompt, SamplingParams(max_new_tokens=200, temperature=0))
    assert result.finish_reason in ("length", "stop") and n_prompt + result.completion_tokens <= 129


def test_empty_prompt_starts_a_document(hf):
    assert hf.generate("", SamplingParams(max_new_tokens=3, temperature=0)).prompt_tokens == 1


def test_not_a_model_folder(tmp_path):
    with pytest.raises(HFModelError):
        load_hf_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(HFModelError):
        load_hf_model(tmp_path)  # a config without weights or tokenizer
