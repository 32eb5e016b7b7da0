"""Where the answer's first token ranks at the first generated token, for the fresh dev questions
(served settings), through the library with the service's lexical-titled retrieval."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from index.corpus import Document
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint
from retro.generate import RetroLanguageModel
from service.retrieval import shared_encoder

model, tok, _ = load_checkpoint("models/demo")
tmp = tempfile.mkdtemp()
idx = copy_serving_version("/work/exp/index-serve", Path(tmp) / "ix")
store = IndexStore.open(idx, tok, shared_encoder("cpu"))
passages = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines()]
store.add_documents([Document(p["id"], p["text"], "fresh", p["title"]) for p in passages])
ret = Retriever(store, mode="lexical-titled")
lm = RetroLanguageModel(model, tok)


def retrieve(texts):
    return np.stack([n.tokens for n in ret.search(list(texts), 2)])


ranks = []
for p in passages:
    for q in p["questions"]:
        with torch.no_grad():
            ids, last, cache, _ = lm.prefilled(tok.encode(q["prompt"]), retrieve)
        order = last.argsort(descending=True).tolist()
        ans = tok.encode(" " + q["answer"])[0]
        r = order.index(ans) + 1
        ranks.append(r)
print(
    "rank 1:",
    sum(r == 1 for r in ranks),
    "2-5:",
    sum(2 <= r <= 5 for r in ranks),
    "6-20:",
    sum(6 <= r <= 20 for r in ranks),
    ">20:",
    sum(r > 20 for r in ranks),
    "of",
    len(ranks),
)
