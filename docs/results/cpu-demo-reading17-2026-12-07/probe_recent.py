"""Probe: a recency rule in retrieval. Among one query's neighbours, rows whose documents share a
title are put in the order their chunks were added, the latest first (a later document about the
same subject first); other rows keep their places. MODE=none: unchanged.

    cd /work/exp && MODE=recent PYTHONPATH=/work/main python probe_recent.py index-serve dev \
        /work/main/models/demo --query-tokens 96 --mode lexical-titled --dump r17/dev-recent

(the third round's reading_check.py with the patch; `models/demo` with its own first-token copy bias,
3.5, which the patch keeps)."""

import os
import sys

import numpy as np

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from index.retriever import Retriever  # noqa: E402

MODE = os.environ.get("MODE", "recent")
_search = Retriever.search
moved = {"queries": 0, "reordered": 0}


def search(self, texts, k, exclude_doc_ids=None):
    results = _search(self, texts, k, exclude_doc_ids)
    if MODE == "none":
        return results
    for hits in results:
        moved["queries"] += 1
        valid = [i for i in range(len(hits.doc_ids)) if hits.chunk_ids[i] >= 0]
        titles = self.store.chunk_titles(np.asarray([hits.chunk_ids[i] for i in valid]))
        order = list(range(len(hits.doc_ids)))
        for title in set(titles):
            rows = [valid[j] for j, t in enumerate(titles) if t == title and t]
            if len({hits.doc_ids[r] for r in rows}) < 2:
                continue
            latest = sorted(rows, key=lambda r: -int(hits.chunk_ids[r]))
            for slot, r in zip(sorted(rows), latest, strict=True):
                order[slot] = r
        if order != sorted(order):
            moved["reordered"] += 1
            hits.tokens = hits.tokens[order]
            hits.scores = hits.scores[order]
            hits.chunk_ids = hits.chunk_ids[order]
            hits.doc_ids = [hits.doc_ids[i] for i in order]
            hits.texts = [hits.texts[i] for i in order]
    return results


Retriever.search = search

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
    print(moved, file=sys.stderr)
