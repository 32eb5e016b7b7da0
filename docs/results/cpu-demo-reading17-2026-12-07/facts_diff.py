"""Which dev real facts (completion and question) the first token's copy bias changes, per bias:

    PYTHONPATH=/work/main python facts_diff.py 0 5 8

(the shipped model on a scratch copy of /work/exp/index-serve with the evaluation's documents
added, `lexical-titled`, k = 2, greedy, 12 tokens; prints the items whose first-span score differs)."""

import sys
import tempfile

import torch

from index.facts import fact_documents, fact_pairs
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from index.version import neighbour_window
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve
from retro.sampling import SamplingParams
from retro.scoring import answer_first

torch.set_flush_denormal(True)
ev = evaluation_set("dev")
facts = list(fact_pairs("dev"))
extra = list(fact_documents("heldout")) + fictional_documents() + ev.documents
model, tok, _ = load_checkpoint("/work/main/models/demo")
with tempfile.TemporaryDirectory() as scratch:
    work = copy_serving_version("/work/exp/index-serve", scratch)
    store = IndexStore.open(work, tok, None)
    store.add_documents(extra)
    retriever = Retriever(store, mode="lexical-titled")
    retriever.window = neighbour_window(store.chunk_size, model.config.retrieved_len)
    params = SamplingParams(max_new_tokens=12, temperature=0.0, seed=0)
    biases = [float(b) for b in sys.argv[1:]]
    lms = {b: RetroLanguageModel(model, tok, first_copy_bias=b) for b in biases}
    for f in facts:
        for form in ("completion", "question"):
            prompt = f.completion if form == "completion" else f.question
            retrieve = RecordingRetrieve(retriever, 2, "on", set())
            outs = {b: lms[b].generate(prompt, params, retrieve).text for b in biases}
            oks = {b: answer_first(f.answer, o) for b, o in outs.items()}
            if len(set(oks.values())) > 1:
                print(form, repr(prompt[-50:]), repr(f.answer), {b: (oks[b], outs[b][:30]) for b in biases})
