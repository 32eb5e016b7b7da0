"""Round 23: the dev real facts and the fictional facts, answer by answer, with the span reader at
$W / follow $B from $READER (reading_check's scratch index and retrieval)."""

import json
import os
import tempfile

import torch

from index.facts import fact_documents, fact_pairs
from index.fictional import fictional_documents, fictional_pairs
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from index.version import neighbour_window
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve
from retro.sampling import SamplingParams
from retro.scoring import answer_first
from retro.span_reader import SpanReader

torch.set_flush_denormal(True)
W, B = float(os.environ["W"]), float(os.environ["B"])
reader = SpanReader.load(os.environ["READER"])
model, tok, _ = load_checkpoint("/work/main/models/demo")
model.config = model.config.replace(
    inference_span_weight=W, inference_span_floor=-5.0, inference_span_follow=B
)
sets = {"dev real": list(fact_pairs("dev"))}
if os.environ.get("FICTIONAL"):
    sets["fictional"] = fictional_pairs()
with tempfile.TemporaryDirectory() as scratch:
    work = copy_serving_version("/work/exp/index-serve", scratch)
    store = IndexStore.open(work, tok, None)
    extra = list(fact_documents("heldout")) + fictional_documents() + evaluation_set("dev").documents
    store.add_documents(extra)
    retriever = Retriever(store, mode="lexical-titled")
    retriever.window = neighbour_window(store.chunk_size, model.config.retrieved_len)
    lm = RetroLanguageModel(model, tok, span_reader=reader)
    params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)
    out = []
    for name, pairs in sets.items():
        for form in ("completion", "question"):
            right = 0
            for p in pairs:
                prompt = p.completion if form == "completion" else p.question
                text = lm.generate(prompt, params, RecordingRetrieve(retriever, 2, "on", set())).text
                ok = answer_first(p.answer, text)
                right += ok
                row = dict(set=name, form=form, prompt=prompt, answer=p.answer, text=text, first=bool(ok))
                out.append(row)
            print(name, form, f"{right}/{len(pairs)}", flush=True)
    with open(os.environ["OUT"], "w") as f:
        json.dump(out, f, indent=0)
