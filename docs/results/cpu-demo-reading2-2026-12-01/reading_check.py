"""The dev and chat drivers of the 2026-12-01 second round (as run, tidied into one).

Reading items (and the held-out-form questions as chats) and, on dev, the held-out real facts'
dev half; retrieval on, hybrid, greedy, first span, on a scratch copy of a serving index with the
evaluation documents added, as `retro eval` adds them. `--chat-only` asks only the chats
(`retro.reading_eval.chat_items`), which `retro eval` now reports as `question_chat`.

    python reading_check.py SERVE_INDEX dev RUN [RUN ...]               # chose the recipe
    python reading_check.py SERVE_INDEX test --chat-only RUN [RUN ...]  # the chat rows
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
from retro.reading_eval import CHAT_KIND, RecordingRetrieve, chat_items, run_items, summarise
from retro.sampling import SamplingParams
from retro.scoring import answer_first


def main(index_dir: str, split: str, runs: list[str], chat_only: bool) -> None:
    torch.set_flush_denormal(True)
    ev = evaluation_set(split)
    items = chat_items(ev.items) if chat_only else ev.items + chat_items(ev.items)
    facts = [] if chat_only else list(fact_pairs(split))
    extra = (
        ev.documents if chat_only else list(fact_documents("heldout")) + fictional_documents() + ev.documents
    )
    with tempfile.TemporaryDirectory() as scratch:
        work = copy_serving_version(index_dir, scratch)
        _, tokenizer, _ = load_checkpoint(runs[0])
        store = IndexStore.open(work, tokenizer, None)
        store.add_documents(extra)
        retriever = Retriever(store, mode="hybrid")
        for run in runs:
            started = time.time()
            model, tokenizer, _ = load_checkpoint(run)
            lm = RetroLanguageModel(model, tokenizer)
            params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)

            def answer(prompt, retrieve, query_start=0, lm=lm, params=params):
                # query_start (2026-12-06, fourteenth round): a chat item's system message is not searched
                return lm.generate(prompt, params, retrieve, query_start).text

            def make(mode, exclude, lm=lm):
                return RecordingRetrieve(retriever, lm.default_k, mode, exclude)

            summary = summarise(run_items(items, answer, make, settings=("on",)))["on"]
            row = {kind: round(100 * v["first"]["value"], 1) for kind, v in summary.items()}
            asked = CHAT_KIND if chat_only else "question"
            row[f"retrieved_{asked}"] = round(100 * summary[asked]["retrieved"]["value"], 1)
            row["n"] = summary[asked]["first"]["n"]
            for form in ("completion", "question") if facts else ():
                right = 0
                for fact in facts:
                    prompt = fact.completion if form == "completion" else fact.question
                    right += answer_first(fact.answer, answer(prompt, make("on", set())))
                row[f"facts_{form}"] = round(100 * right / len(facts), 1)
            print(run, json.dumps(row), f"{time.time() - started:.0f}s", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    chat_only = "--chat-only" in args
    args = [a for a in args if a != "--chat-only"]
    main(args[0], args[1], args[2:], chat_only)
