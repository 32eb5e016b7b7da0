"""The dev-split driver that chose the 2026-12-01 second-round demo (as run, tidied).

Reading items (and the held-out-form questions as chats) and the held-out real facts' dev half,
retrieval on, hybrid, greedy, first span, on a scratch copy of a serving index with the
evaluation documents added, as `retro eval --split dev` adds them.

    python dev_check.py SERVE_INDEX RUN [RUN ...]
"""

import json
import sys
import tempfile
import time

import torch

from index.facts import fact_documents, fact_pairs
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve, chat_items, run_items, summarise
from retro.sampling import SamplingParams
from retro.scoring import answer_first


def main(index_dir: str, runs: list[str]) -> None:
    torch.set_flush_denormal(True)
    ev = evaluation_set("dev")
    items = ev.items + chat_items(ev.items)
    with tempfile.TemporaryDirectory() as scratch:
        work = copy_serving_version(index_dir, scratch)
        _, tokenizer, _ = load_checkpoint(runs[0])
        store = IndexStore.open(work, tokenizer, None)
        store.add_documents(list(fact_documents("heldout")) + fictional_documents() + ev.documents)
        retriever = Retriever(store, mode="hybrid")
        facts = list(fact_pairs("dev"))
        for run in runs:
            started = time.time()
            model, tokenizer, _ = load_checkpoint(run)
            lm = RetroLanguageModel(model, tokenizer)
            params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)

            def answer(prompt, retrieve, lm=lm, params=params):
                return lm.generate(prompt, params, retrieve).text

            def make(mode, exclude, lm=lm):
                return RecordingRetrieve(retriever, lm.default_k, mode, exclude)

            summary = summarise(run_items(items, answer, make, settings=("on",)))["on"]
            row = {kind: round(100 * v["first"]["value"], 1) for kind, v in summary.items()}
            row["retrieved_q"] = round(100 * summary["question"]["retrieved"]["value"], 1)
            for form in ("completion", "question"):
                right = 0
                for fact in facts:
                    prompt = fact.completion if form == "completion" else fact.question
                    right += answer_first(fact.answer, answer(prompt, make("on", set())))
                row[f"facts_{form}"] = round(100 * right / len(facts), 1)
            print(run, json.dumps(row), f"{time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
