"""Round 19 probe: a supersession rule in retrieval. Among a query's candidates (k + EXTRA searched),
rows of a document that shares its title with a later-added document among them are dropped (the
later document supersedes it: an update notice over the passage it changes); the first k rows left
are the neighbours. MODE=none: unchanged (k searched).

    cd /work/exp && PYTHONPATH=/work/main python r19/probe_latest.py index-serve dev demo-fc5 \
        --query-tokens 96 --mode lexical-titled --dump r19/latest/dev
"""

import os
import sys

import numpy as np

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from index.retriever import Neighbours, Retriever  # noqa: E402

MODE = os.environ.get("MODE", "latest")
EXTRA = int(os.environ.get("EXTRA", "4"))
_search = Retriever.search
counts = {"queries": 0, "changed": 0}


def search(self, texts, k, exclude_doc_ids=None):
    if MODE == "none":
        return _search(self, texts, k, exclude_doc_ids)
    out = []
    for hits in _search(self, texts, k + EXTRA, exclude_doc_ids):
        counts["queries"] += 1
        valid = [i for i in range(len(hits.doc_ids)) if hits.chunk_ids[i] >= 0]
        titles = dict(
            zip(valid, self.store.chunk_titles(np.asarray([hits.chunk_ids[i] for i in valid])), strict=True)
        )
        newest = {}  # title -> the doc id of its latest-added chunk among the candidates
        for i in valid:
            t = titles[i]
            if t and (t not in newest or hits.chunk_ids[i] > newest[t][1]):
                newest[t] = (hits.doc_ids[i], hits.chunk_ids[i])
        keep = [
            i
            for i in range(len(hits.doc_ids))
            if i not in titles or not titles[i] or hits.doc_ids[i] == newest[titles[i]][0]
        ][:k]
        if keep != list(range(k)):
            counts["changed"] += 1
        out.append(
            Neighbours(
                tokens=hits.tokens[keep],
                scores=hits.scores[keep],
                doc_ids=[hits.doc_ids[i] for i in keep],
                chunk_ids=hits.chunk_ids[keep],
                texts=[hits.texts[i] for i in keep],
            )
        )
    return out


Retriever.search = search

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
    print(counts, file=sys.stderr)
