"""Retrieval-only probe (2026-12-05): for a split's reading items, is the answer *shown* (its text in
the chunk + continuation of one of the top-k neighbours of the prompt's last 32 LM tokens), is its
passage retrieved, and when it is not shown, was the passage retrieved by another of its chunks or
not at all. No model decodes; the index is a scratch copy of the serving index with the evaluation
documents added, as `retro eval` adds them.

    PYTHONPATH=REPO python probe_shown.py SERVE_INDEX dev [MODEL_FOR_TOKENIZER]
"""

import collections
import sys
import tempfile

from index.facts import fact_documents
from index.fictional import fictional_documents
from index.reading import evaluation_set
from index.retriever import Retriever
from index.store import IndexStore, copy_serving_version
from retro.checkpoint import load_checkpoint

KINDS = ("question", "question_trained_form", "reworded")
SETTINGS = (("hybrid-titled", 2), ("dense", 2), ("hybrid-titled", 4))


def main(index: str, split: str, model: str) -> None:
    ev = evaluation_set(split)
    items = [i for i in ev.items if i.kind in KINDS]
    extra = list(fact_documents("heldout")) + fictional_documents() + ev.documents
    with tempfile.TemporaryDirectory() as scratch:
        _, tok, _ = load_checkpoint(model)
        store = IndexStore.open(copy_serving_version(index, scratch), tok, None)
        store.add_documents(extra)
        queries = [tok.decode(tok.encode(i.prompt)[-32:]) for i in items]
        for mode, k in SETTINGS:
            hits = Retriever(store, mode=mode).search(queries, k)
            n, shown, retrieved = collections.Counter(), collections.Counter(), collections.Counter()
            misses = collections.Counter()
            for item, hit in zip(items, hits, strict=True):
                texts = tok.decode_batch([row[row != store.pad_id].tolist() for row in hit.tokens])
                is_shown = any(item.answer in t for t in texts)
                is_retrieved = any(d in item.evidence for d in hit.doc_ids)
                n[item.kind] += 1
                shown[item.kind] += is_shown
                retrieved[item.kind] += is_retrieved
                if not is_shown:
                    misses[item.kind, "passage, other chunk" if is_retrieved else "other documents"] += 1
            for kind in KINDS:
                why = {w: c for (kk, w), c in misses.items() if kk == kind}
                pct_shown, pct_retrieved = 100 * shown[kind] / n[kind], 100 * retrieved[kind] / n[kind]
                share = f"shown {pct_shown:.1f}%, retrieved {pct_retrieved:.1f}%"
                print(f"{mode} k={k} {kind}: {share}, not shown: {why}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "models/demo")
