"""Which neighbour windows show the answer? A retrieval-only probe (2026-12-06), no decoding.

For the dev items, hybrid-titled search with the prompt's last 32 LM tokens, k = 2 and 4, in four
variants: RETRO's [chunk, continuation]; `lastfill`: a document's last chunk (which has no
continuation) shown as [previous chunk, chunk]; `dedupe`: at most one chunk per document among the
top k; both. Prints the share of items whose answer is in a neighbour's text, by kind.

    PYTHONPATH=REPO python probe_windows.py SERVE_INDEX dev MODEL_FOR_TOKENIZER
"""

import collections
import sys
import tempfile
from contextlib import contextmanager

import numpy as np
import torch

from index.facts import fact_documents
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint

torch.set_num_threads(1)
KINDS = ("question", "question_trained_form", "reworded", "prefix", "long")


def windows(store, chunk_ids, lastfill):
    snap = store._snapshot
    tokens = store.chunks_with_continuations(chunk_ids)
    if not lastfill:
        return tokens
    m = store.chunk_size
    for j, c in enumerate(chunk_ids):
        if c <= 0:
            continue
        nxt = c + 1
        last = nxt >= len(snap.doc_index) or snap.doc_index[nxt] != snap.doc_index[c]
        if last and snap.doc_index[c - 1] == snap.doc_index[c]:
            tokens[j, :m] = snap.tokens[c - 1]
            tokens[j, m:] = snap.tokens[c]
    return tokens


@contextmanager
def evaluation_store(index, split, model, kinds):
    """(items of `kinds`, a scratch copy of the serving index with the evaluation documents added
    as `retro eval` adds them, the model's tokenizer, each item's query: its last 32 LM tokens)."""
    ev = evaluation_set(split)
    items = [i for i in ev.items if i.kind in kinds]
    extra = list(fact_documents("heldout")) + fictional_documents() + ev.documents
    with tempfile.TemporaryDirectory() as scratch:
        _, tok, _ = load_checkpoint(model)
        store = IndexStore.open(copy_serving_version(index, scratch), tok, None)
        store.add_documents(extra)
        yield items, store, tok, [tok.decode(tok.encode(i.prompt)[-32:]) for i in items]


def main(index, split, model):
    with evaluation_store(index, split, model, KINDS) as (items, store, tok, queries):
        retriever = Retriever(store, mode="hybrid-titled")
        hits = retriever.search(queries, 12)
        for k in (2, 4):
            for dedupe in (False, True):
                for lastfill in (False, True):
                    n, shown = collections.Counter(), collections.Counter()
                    for item, hit in zip(items, hits, strict=True):
                        ids, seen = [], set()
                        for c, d in zip(hit.chunk_ids.tolist(), hit.doc_ids, strict=True):
                            if dedupe and d in seen:
                                continue
                            seen.add(d)
                            ids.append(c)
                        ids = np.array(ids[:k])
                        rows = windows(store, ids, lastfill)
                        texts = tok.decode_batch([r[r != store.pad_id].tolist() for r in rows])
                        n[item.kind] += 1
                        shown[item.kind] += any(item.answer in t for t in texts)
                    cells = " ".join(f"{kind}={100 * shown[kind] / n[kind]:.1f}" for kind in KINDS)
                    print(f"k={k} dedupe={dedupe} lastfill={lastfill}: {cells}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
