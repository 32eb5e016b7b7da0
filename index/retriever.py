"""The retriever: query texts (or LM chunk tokens) -> k neighbours of [chunk + continuation] tokens.

This module owns the shape the model consumes (`Neighbours.tokens` [k, 2 * chunk_size], pad_id
padded) and the optional exclusion of given doc ids (training excludes the sequence's own document,
RETRO section 2.3). Searching, locking and the on-disk arrays belong to `IndexStore`; encoding to
the store's encoder. It never imports `retro`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.store import IndexStore


@dataclass
class Neighbours:
    """The neighbours of one query, best first.

    When the store holds fewer than k eligible chunks, the missing rows are padding: tokens all
    pad_id, score -inf, chunk id -1, doc id "" and text "".
    """

    tokens: np.ndarray  # [k, 2 * chunk_size] int64: the chunk, then its continuation (pad if none)
    scores: np.ndarray  # [k] float32 cosine similarity
    doc_ids: list[str]
    chunk_ids: np.ndarray  # [k] int64
    texts: list[str]  # decoded chunk text (without the continuation)


class Retriever:
    """Batched k-nearest-chunk search over an `IndexStore` (thread-safe like the store)."""

    def __init__(self, store: IndexStore, encoder=None):
        self.store = store
        self._encoder = encoder

    @property
    def encoder(self):
        return self._encoder if self._encoder is not None else self.store.encoder

    def search(
        self, texts: list[str], k: int, exclude_doc_ids: list[set[str]] | None = None
    ) -> list[Neighbours]:
        """One `Neighbours` per text; `exclude_doc_ids[i]` lists doc ids query i must not get."""
        if isinstance(texts, str):
            raise ValueError("search takes a list of texts, not one string")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not texts:
            return []
        vectors = self.encoder.encode(list(texts))
        found = self.store.nearest_chunks(vectors, k, exclude_doc_ids)
        m = self.store.chunk_size
        chunk_texts = self.store.tokenizer.decode_batch(
            [row[row != self.store.pad_id].tolist() for row in found.tokens.reshape(-1, 2 * m)[:, :m]]
        )
        return [
            Neighbours(
                tokens=found.tokens[i],
                scores=found.scores[i],
                doc_ids=found.doc_ids[i],
                chunk_ids=found.chunk_ids[i],
                texts=[
                    t if c >= 0 else ""
                    for t, c in zip(chunk_texts[i * k : (i + 1) * k], found.chunk_ids[i], strict=True)
                ],
            )
            for i in range(len(texts))
        ]

    def search_tokens(
        self, chunk_tokens: np.ndarray, k: int, exclude_doc_ids: list[set[str]] | None = None
    ) -> list[Neighbours]:
        """Like `search` for LM token chunks [n, chunk_size] (pad_id ignored): decoded, then searched."""
        chunk_tokens = np.asarray(chunk_tokens)
        if chunk_tokens.ndim != 2:
            raise ValueError(f"chunk_tokens must be [n, chunk_size], got shape {chunk_tokens.shape}")
        pad_id = self.store.pad_id
        texts = self.store.tokenizer.decode_batch([row[row != pad_id].tolist() for row in chunk_tokens])
        return self.search(list(texts), k, exclude_doc_ids)
