"""The dev driver of the 2026-12-02 third round: reading items (and, unless --no-facts, the held-out
real facts' dev half), retrieval on, hybrid, greedy, first span, on a scratch copy of a serving
index with the evaluation documents added as `retro eval` adds them; per kind the first-span
accuracy, the share whose passage was retrieved, the share whose answer was *shown* (its words in
the neighbours the model saw) and the accuracy given shown; per family for held-out-form questions.

    python reading_check.py SERVE_INDEX dev [--k K] [--titles] [--kinds question,reworded] \
        [--query-tokens N] [--mode MODE] [--dump PREFIX] RUN [RUN ...]

Since the twelfth round (2026-12-06) each run is shown neighbours as long as its retrieved_len (as
`retro eval` and the service show them), --query-tokens widens the query as `retro eval
--query-tokens` does (default: the run's own inference_query_tokens, else the chunk), and --mode
picks the retrieval mode (default: hybrid, with --titles hybrid-titled). For the models of the
earlier rounds (64-token neighbours, no query setting) the defaults run what they ran.
"""

import argparse
import json
import tempfile
import time

import torch

from index.facts import fact_documents, fact_pairs
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from index.version import neighbour_window
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve, chat_items, run_items, summarise
from retro.sampling import SamplingParams
from retro.scoring import answer_first


def pct(p: dict) -> float:
    return round(100 * p["value"], 1)


def main(args) -> None:
    torch.set_flush_denormal(True)
    ev = evaluation_set(args.split)
    items = ev.items + chat_items(ev.items)
    if args.kinds:
        items = [i for i in items if i.kind in args.kinds.split(",")]
    facts = [] if args.no_facts else list(fact_pairs(args.split))
    extra = list(fact_documents("heldout")) + fictional_documents() + ev.documents
    with tempfile.TemporaryDirectory() as scratch:
        work = copy_serving_version(args.index, scratch)
        _, tokenizer, _ = load_checkpoint(args.runs[0])
        store = IndexStore.open(work, tokenizer, None)
        store.add_documents(extra)
        retriever = Retriever(store, mode=args.mode or "hybrid", lexical_titles=args.titles)
        for run in args.runs:
            started = time.time()
            model, tokenizer, _ = load_checkpoint(run)
            retriever.window = neighbour_window(store.chunk_size, model.config.retrieved_len)
            lm = RetroLanguageModel(model, tokenizer, query_tokens=args.query_tokens or None)
            k = args.k or lm.default_k
            params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)

            def answer(prompt, retrieve, query_start=0, lm=lm, params=params):
                # query_start (2026-12-06, fourteenth round): a chat item's system message is not searched
                return lm.generate(prompt, params, retrieve, query_start).text

            def make(mode, exclude, k=k):
                return RecordingRetrieve(retriever, k, mode, exclude)

            results = run_items(items, answer, make, settings=("on",))
            if args.dump:  # every answer, for reading the errors (added 2026-12-06)
                with open(f"{args.dump}-{run.strip('/').replace('/', '_')}.json", "w") as f:
                    json.dump([r.to_dict() for r in results], f)
            summary = summarise(results)["on"]
            row = {"k": k}
            for kind, v in summary.items():
                row[kind] = pct(v["first"])
                if "shown" in v:
                    row[f"{kind}:retrieved/shown/given_shown"] = [
                        pct(v["retrieved"]),
                        pct(v["shown"]),
                        pct(v["first_given_shown"]),
                    ]
            if "question" in summary:
                row["question_by_family"] = {f: pct(p) for f, p in summary["question"]["by_family"].items()}
                row["question_by_form"] = {f: pct(p) for f, p in summary["question"]["by_form"].items()}
            for form in ("completion", "question") if facts else ():
                right = sum(
                    answer_first(
                        f.answer,
                        answer(f.completion if form == "completion" else f.question, make("on", set())),
                    )
                    for f in facts
                )
                row[f"facts_{form}"] = round(100 * right / len(facts), 1)
            print(run, json.dumps(row), f"{time.time() - started:.0f}s", flush=True)


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("index")
    parser.add_argument("split")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--k", type=int, default=0)
    parser.add_argument("--query-tokens", type=int, default=0)
    parser.add_argument(
        "--mode", default="", help="retrieval mode (default: hybrid, with --titles hybrid-titled)"
    )
    parser.add_argument("--kinds", default="")
    parser.add_argument("--dump", default="", help="write every answer to DUMP-RUN.json")
    parser.add_argument("--no-facts", action="store_true")
    parser.add_argument(
        "--titles", action="store_true", help="BM25 sees each chunk under its document's title"
    )
    return parser


if __name__ == "__main__":
    main(arguments().parse_args())
