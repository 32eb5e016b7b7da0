"""Why a large first-token copy bias loses calling codes: the first token's distribution (top 4) for
two calling-code prompts at several biases, and what the two neighbours showed.

    cd /work/main && PYTHONPATH=. python docs/results/cpu-demo-reading17-2026-12-07/why_calling_code.py

(the shipped weights on a scratch copy of /work/exp/index-serve with the held-out fact documents
added, `lexical-titled`, k = 2, the model's 96-token query).
"""

import tempfile

import torch

from index.facts import fact_documents
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from index.version import neighbour_window
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from retro.reading_eval import RecordingRetrieve

PROMPTS = ["The calling code of Azerbaijan is", "What is the calling code of Cambodia?"]

model, tokenizer, _ = load_checkpoint("/work/main/models/demo")
with tempfile.TemporaryDirectory() as scratch, torch.inference_mode():
    store = IndexStore.open(copy_serving_version("/work/exp/index-serve", scratch), tokenizer, None)
    store.add_documents(list(fact_documents("heldout")))
    retriever = Retriever(store, mode="lexical-titled")
    retriever.window = neighbour_window(store.chunk_size, model.config.retrieved_len)
    for prompt in PROMPTS:
        for bias in (0.0, 3.5, 5.0, 8.0):
            lm = RetroLanguageModel(model, tokenizer, first_copy_bias=bias)
            retrieve = RecordingRetrieve(retriever, 2, "on", set())
            _, last, _, _ = lm.prefilled(tokenizer.encode(prompt), retrieve)
            top = torch.topk(last.exp(), 4)
            pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
            print(prompt, bias, [(tokenizer.decode([i]), round(p, 3)) for p, i in pairs])
        print("   shown:", [text[:140] for text in retrieve.shown])
