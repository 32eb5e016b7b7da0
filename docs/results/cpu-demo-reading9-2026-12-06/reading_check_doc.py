"""The third round's reading_check.py with retrieval mode `hybrid-titled-doc` (index.retriever:
the first two neighbours are two non-overlapping windows of the best document), same arguments.

    python reading_check_doc.py SERVE_INDEX dev [--dump PREFIX] RUN [RUN ...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu-demo-reading3-2026-12-03"))

import reading_check  # noqa: E402

from index.retriever import Retriever  # noqa: E402


class TopDocumentRetriever(Retriever):
    def __init__(self, store, mode="hybrid", lexical_titles=False):
        super().__init__(store, mode="hybrid-titled-doc")


reading_check.Retriever = TopDocumentRetriever

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())  # --titles is ignored: the mode has titles
