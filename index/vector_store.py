"""The seam between the index's versioning and its vector search: what a vector store must do.

This module owns the `VectorStore` protocol (add, search, save, size, and whether searches may run
concurrently) and the two ways to get one: `build_vector_store` trains (when the kind needs it)
and fills one from a version's embeddings, `open_vector_store` loads the one a version's manifest
names. `index.build`, `index.store` and `index.neighbours` use only these, never faiss itself.

Today the only implementation is faiss (`index.faiss_index.FaissIndex`; the manifest keys
`faiss_factory` and `faiss_file` are part of the on-disk format). A second one (e.g. Milvus) is a
module beside faiss_index.py that satisfies `VectorStore`, plus a branch in the two functions here
chosen by the factory string and recorded in the manifest; the store's versioning stays as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from index.faiss_index import FaissIndex


@runtime_checkable
class VectorStore(Protocol):
    """Vectors with ids 0..n-1 in insertion order, searched by inner product (= cosine for the
    unit vectors the encoder gives)."""

    factory: str  # how it was made; the manifest records it as `faiss_factory`
    dim: int

    @property
    def ntotal(self) -> int:
        """The number of vectors held (its size)."""

    @property
    def concurrent_search(self) -> bool:
        """Whether two threads may search it at once (the store serialises searches otherwise)."""

    def add(self, vectors: np.ndarray) -> None:
        """Appends [n, dim] vectors; they get the next n ids."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n, k] float32, ids [n, k] int64), best first; missing results score -inf, id -1."""

    def save(self, path: str | Path) -> None:
        """Writes it to one file that `open_vector_store` reads back."""


def build_vector_store(
    vectors: np.ndarray, factory: str | None = None, gpu: bool | None = None, seed: int = 0
) -> VectorStore:
    """A vector store holding `vectors` (ids 0..n-1); factory None chooses one by size and dimension."""
    return FaissIndex.build(vectors, factory, gpu, seed)


def open_vector_store(version_dir: Path, manifest: dict, gpu: bool | None = None) -> VectorStore:
    """The vector store a version's manifest names, loaded from the version folder."""
    return FaissIndex.load(Path(version_dir) / manifest["faiss_file"], manifest["faiss_factory"], gpu)
