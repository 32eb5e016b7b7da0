"""The seam between the index's versioning and its vector search: what a vector store must do.

This module owns the `VectorStore` protocol (add, search, save, size, and whether searches may run
concurrently), the stores there are and how a version names its own (`parse_vector_store`: "faiss",
the default, or "milvus:URI"), and the two ways to get one: `build_vector_store` trains (when the
kind needs it) and fills one from a version's embeddings, `open_vector_store` loads the one a
version's manifest names. `index.build`, `index.store` and `index.neighbours` use only these,
never faiss or Milvus themselves.

The implementations: faiss (`index.faiss_index.FaissIndex`) and Milvus
(`index.milvus_store.MilvusStore`, imported only when a version uses it). The manifest's
`vector_store` key says which (absent = faiss: indexes from before it open unchanged); `faiss_factory`
and `faiss_file` keep their historical names for any store: the kind of index it was made with
and the file in the version folder that `save` wrote (a faiss index, or a Milvus pointer file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from index.faiss_index import FaissIndex
from index.layout import EMBEDDINGS
from index.version import open_rows


@runtime_checkable
class VectorStore(Protocol):
    """Vectors with ids 0..n-1 in insertion order, searched by inner product (= cosine for the
    unit vectors the encoder gives)."""

    factory: str  # how it was made (faiss factory string, Milvus index type): the manifest's `faiss_factory`
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


FAISS, MILVUS = "faiss", "milvus"


def parse_vector_store(spec: str | None) -> tuple[str, str | None]:
    """("faiss", None) or ("milvus", URI normalised) for "faiss" / None / "milvus:URI"; ValueError
    naming the accepted forms otherwise. Checks the URI's form only, connects to nothing."""
    if spec is None or spec == FAISS:
        return FAISS, None
    kind, _, uri = spec.partition(":")
    if kind != MILVUS:
        raise ValueError(
            f"unknown vector store {spec!r}: use faiss or milvus:URI (http://HOST:19530 or PATH.db)"
        )
    from index.milvus_store import check_uri

    return MILVUS, check_uri(uri)


def check_vector_store(spec: str | None) -> str:
    """The spec normalised ("faiss" or "milvus:URI"), after checking that a Milvus answers at URI
    (ValueError otherwise): a build finds a wrong address before its long embedding stage."""
    kind, uri = parse_vector_store(spec)
    if kind == MILVUS:
        from index.milvus_store import connect

        connect(uri)
        return f"{MILVUS}:{uri}"
    return FAISS


def store_of(manifest: dict) -> str:
    """The vector store a version's manifest names ("faiss" when it predates the key)."""
    return manifest.get("vector_store", FAISS)


def build_vector_store(
    vectors: np.ndarray,
    factory: str | None = None,
    gpu: bool | None = None,
    seed: int = 0,
    store: str | None = None,
) -> VectorStore:
    """A vector store holding `vectors` (ids 0..n-1) in `store` (None: faiss); factory None chooses
    one by size and dimension (faiss), or exact search (Milvus: FLAT; else a Milvus index type)."""
    kind, uri = parse_vector_store(store)
    if kind == MILVUS:
        from index.milvus_store import MilvusStore

        return MilvusStore.build(vectors, uri, factory)
    return FaissIndex.build(vectors, factory, gpu, seed)


def open_vector_store(version_dir: Path, manifest: dict, gpu: bool | None = None) -> VectorStore:
    """The vector store a version's manifest names, loaded from the version folder."""
    version_dir = Path(version_dir)
    if store_of(manifest).partition(":")[0] == MILVUS:
        from index.milvus_store import MilvusStore

        # A copied version's first addition copies the collection from the version's own embeddings.
        def rows(n: int) -> np.ndarray:
            return open_rows(version_dir / EMBEDDINGS, np.float32, n, manifest["embedding_dim"])

        return MilvusStore.load(version_dir / manifest["faiss_file"], manifest["n_chunks"], rows)
    return FaissIndex.load(version_dir / manifest["faiss_file"], manifest["faiss_factory"], gpu)
