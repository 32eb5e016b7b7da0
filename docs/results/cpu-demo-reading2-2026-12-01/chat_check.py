"""The test-split driver for the chat rows of the 2026-12-01 second round (as run, tidied).

The reading set's held-out-form questions after a system message no training conversation uses
(`retro.reading_eval.chat_items`, rendered by the chat template), retrieval on, hybrid, greedy,
first span; `retro eval` now asks the same items as `question_chat`.

    python chat_check.py SERVE_INDEX RUN [RUN ...] SPLIT
"""

import json
import sys
import tempfile
import time

import torch

from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import CHAT_KIND, RecordingRetrieve, chat_items, run_items, summarise
from retro.sampling import SamplingParams


def main(index_dir: str, runs: list[str], split: str) -> None:
    torch.set_flush_denormal(True)
    ev = evaluation_set(split)
    items = chat_items(ev.items)
    with tempfile.TemporaryDirectory() as scratch:
        work = copy_serving_version(index_dir, scratch)
        _, tokenizer, _ = load_checkpoint(runs[0])
        store = IndexStore.open(work, tokenizer, None)
        store.add_documents(ev.documents)
        retriever = Retriever(store, mode="hybrid")
        for run in runs:
            started = time.time()
            model, tokenizer, _ = load_checkpoint(run)
            lm = RetroLanguageModel(model, tokenizer)
            params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)

            def answer(prompt, retrieve, lm=lm, params=params):
                return lm.generate(prompt, params, retrieve).text

            def make(mode, exclude, lm=lm):
                return RecordingRetrieve(retriever, lm.default_k, mode, exclude)

            row = summarise(run_items(items, answer, make, settings=("on",)))["on"][CHAT_KIND]
            out = {
                CHAT_KIND: round(100 * row["first"]["value"], 1),
                "retrieved_chat": round(100 * row["retrieved"]["value"], 1),
                "n": row["first"]["n"],
            }
            print(run, json.dumps(out), f"{time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:-1], sys.argv[-1])
