"""A version's chunk arrays, opened read-only: the one opener the live store and training share.

This module owns mapping a version folder's row files (`index.layout`: chunks, chunk_doc,
chunk_pos, embeddings) into memory for the first n_chunks rows the manifest counts, and RETRO's
neighbour layout built from them: a chunk followed by its continuation, the next chunk of the same
document. `VersionArrays` is never mutated: the live store swaps in a new one after an append,
`index.neighbours.TrainingChunks` opens one per data-loader worker (memmaps: nothing is read
until used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.chunker import TOKEN_DTYPE
from index.layout import CHUNK_DOC, CHUNK_POS, CHUNKS, EMBEDDINGS


def open_rows(path: Path, dtype, n_rows: int, width: int | None = None) -> np.ndarray:
    """A read-only memmap of the first n_rows rows (an empty array when there are none)."""
    shape = (n_rows,) if width is None else (n_rows, width)
    if n_rows == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def neighbour_window(chunk_size: int, *retrieved_lens: int) -> int:
    """Chunks a neighbour shows (`VersionArrays.with_continuations`' window) for models that read
    neighbours of these lengths, each fitting them to its own: enough for the longest, at least
    RETRO's chunk + continuation (2)."""
    return max([2, *(-(-r // chunk_size) for r in retrieved_lens)])


@dataclass(frozen=True)
class VersionArrays:
    """tokens [N, chunk_size] int32, doc_index [N] int64, position [N] int32, embeddings [N, dim]
    float32 of one version, N = n_chunks."""

    n_chunks: int
    tokens: np.ndarray
    doc_index: np.ndarray
    position: np.ndarray
    embeddings: np.ndarray

    @classmethod
    def open(cls, version_dir: Path, manifest: dict, n_chunks: int | None = None) -> VersionArrays:
        """The first n_chunks rows (default: the manifest's count) of the version's row files."""
        n = manifest["n_chunks"] if n_chunks is None else n_chunks
        return cls(
            n_chunks=n,
            tokens=open_rows(version_dir / CHUNKS, TOKEN_DTYPE, n, manifest["chunk_size"]),
            doc_index=open_rows(version_dir / CHUNK_DOC, np.int64, n),
            position=open_rows(version_dir / CHUNK_POS, np.int32, n),
            embeddings=open_rows(version_dir / EMBEDDINGS, np.float32, n, manifest["embedding_dim"]),
        )

    def with_continuations(self, chunk_ids: np.ndarray, pad_id: int, window: int = 2) -> np.ndarray:
        """[..., window*m] int64 for chunk ids of any shape: the chunk, then the next window - 1
        chunks of the same document (RETRO's continuation: window 2); all pad_id for id -1, pad_id
        where the document ends first."""
        if window < 1:
            raise ValueError(f"a neighbour window holds at least its own chunk, got window={window}")
        chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
        flat = chunk_ids.reshape(-1)
        n_chunks, m = self.tokens.shape
        out = np.full((len(flat), window * m), pad_id, dtype=np.int64)
        valid = flat >= 0
        if np.any(flat >= n_chunks):
            raise ValueError(f"chunk id {int(flat.max())} is out of range: the store has {n_chunks} chunks")
        out[valid, :m] = self.tokens[flat[valid]]
        same_doc = valid.copy()
        for j in range(1, window):
            following = flat + j
            same_doc &= following < n_chunks
            same_doc[same_doc] = self.doc_index[following[same_doc]] == self.doc_index[flat[same_doc]]
            out[same_doc, j * m : (j + 1) * m] = self.tokens[following[same_doc]]
        return out.reshape(*chunk_ids.shape, window * m)
