"""Dev-split check of several models: reading items and held-out real facts (dev half), retrieval
on, hybrid, greedy, first span. Usage: python dev_check.py SERVE_INDEX RUN [RUN...]"""
import sys, tempfile, time, json
from collections import defaultdict
from pathlib import Path
import torch
torch.set_flush_denormal(True)
from index.store import IndexStore, copy_serving_version
from index.retriever import Retriever
from index.facts import fact_documents, fact_pairs
from index.fictional import fictional_documents
from index.reading import evaluation_set
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve, run_items, summarise
from retro.sampling import SamplingParams
from retro.scoring import answer_first

index_dir, runs = sys.argv[1], sys.argv[2:]
kinds_wanted = None
ev = evaluation_set("dev")
from retro.reading_eval import chat_items
items = ev.items + chat_items(ev.items)
with tempfile.TemporaryDirectory() as scratch:
    work = copy_serving_version(index_dir, scratch)
    _, tok, _ = load_checkpoint(runs[0])
    store = IndexStore.open(work, tok, None)
    store.add_documents(list(fact_documents("heldout")) + fictional_documents() + ev.documents)
    retriever = Retriever(store, mode="hybrid")
    facts = list(fact_pairs("dev"))
    out = {}
    for run in runs:
        t0 = time.time()
        model, tok, meta = load_checkpoint(run)
        lm = RetroLanguageModel(model, tok)
        params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)
        answer = lambda prompt, retrieve: lm.generate(prompt, params, retrieve).text
        make = lambda mode, exclude: RecordingRetrieve(retriever, lm.default_k, mode, exclude)
        results = run_items(items, answer, make, settings=("on",))
        summ = summarise(results)["on"]
        row = {k: round(100 * v["first"]["value"], 1) for k, v in summ.items()}
        row["retrieved_q"] = round(100 * summ["question"]["retrieved"]["value"], 1)
        for form in ("completion", "question"):
            ok = 0
            for f in facts:
                prompt = f.completion if form == "completion" else f.question
                ok += answer_first(f.answer, answer(prompt, make("on", set())))
            row[f"facts_{form}"] = round(100 * ok / len(facts), 1)
        out[run] = row
        print(run, json.dumps(row), f"{time.time()-t0:.0f}s", flush=True)
    # a few question answers of the last model, to read
    for r in results[:0]:
        pass
