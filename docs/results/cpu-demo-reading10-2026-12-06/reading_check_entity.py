"""The third round's reading_check.py with a prototype retrieval rule, "entity first": hybrid-titled
over 16 fused candidates, then the best window and the best non-overlapping window of any document
with the best one's *title* (the ninth round's `hybrid-titled-doc` takes it from the best document
only), then other documents' best windows. Same arguments as reading_check.py.

    python reading_check_entity.py SERVE_INDEX dev [--dump PREFIX] RUN [RUN ...]

Not a retrieval mode: on test it did not beat `hybrid-titled` (docs/results/cpu-demo-reading10-2026-12-06).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu-demo-reading3-2026-12-03"))

import reading_check  # noqa: E402

from index.retriever import TOP_DOCUMENT_POOL, Neighbours, Retriever, top_document_first  # noqa: E402


class EntityFirstRetriever(Retriever):
    def __init__(self, store, mode="hybrid", lexical_titles=False):
        super().__init__(store, mode="hybrid-titled")

    def search(self, texts, k, exclude_doc_ids=None):
        pool = self._hybrid(
            list(texts), self.encoder.encode(list(texts)), max(k, TOP_DOCUMENT_POOL), exclude_doc_ids
        )
        return [top_document_first(found, k, self._entities(found)) for found in pool]

    def _entities(self, found: Neighbours) -> list[str]:
        """Each candidate's entity: its document's title, or the document itself when untitled."""
        titles = self.store.chunk_titles(found.chunk_ids)
        return [f"title:{t}" if t else f"doc:{d}" for t, d in zip(titles, found.doc_ids, strict=True)]


reading_check.Retriever = EntityFirstRetriever

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())  # --titles is ignored: the rule has titles
