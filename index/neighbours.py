"""Training support: precomputed neighbours of every chunk, and read-only accessors for a trainer.

This module owns `neighbours-k<k>.npy` (named by `index.layout`), a .npy memmap [N, k] int64 in a
version folder: for every chunk of the version, its k nearest chunks from OTHER documents (RETRO
section 2.3: a training sequence must not retrieve its own document), found with the stored
embeddings (nothing is re-encoded) and the version's vector store; -1 where fewer than k exist.
`TrainingChunks` opens a version without a tokenizer or an encoder (cheap enough for data-loader
workers; its arrays come from `index.version.VersionArrays`, as the live store's do) and gives
the arrays a trainer needs.

A second kind of table, `neighbours-k<k>-not-<hash>.npy`, leaves out documents by doc-id prefix
(`never_from`): training material such as question-and-answer documents, which no serving index
holds, so a training chunk is never served by one either. With `query_chunks` n > 1
(`...-not-<hash>-q<n>.npy`), the left-out documents' own chunks are queried as a served prompt is:
the text of the chunk and up to n - 1 chunks before it in its document, embedded afresh, because
the service retrieves with a prompt's last `inference_query_tokens` (96 for the demo), not with its
last chunk. A question that names its subject a chunk before it asks ("I am writing about X. ...
When was this company founded?") then finds X's passage in training as it does when served.

Removed documents (`index.store.IndexStore.remove_documents`, the tombstones of removed.jsonl)
are never anyone's neighbour; their own chunks keep rows (a trainer that samples sequences from
`TrainingChunks` still sees their text: it is not filtered here).

Caveat: documents added live after a precompute have no rows in the table (`n_precomputed` says
how many chunks it covers), and documents removed after it may still be neighbours in it; rerun
`precompute_neighbours` after additions or removals. It never imports `retro`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from index.chunker import continuation_ids, decode_chunks
from index.layout import (
    MANIFEST,
    TOKENIZER_FILE,
    neighbours_file,
    neighbours_info_file,
    read_documents,
    read_json,
    read_removed,
    replacing,
    resolve_version_dir,
    write_atomic,
)
from index.vector_store import open_vector_store
from index.version import VersionArrays


def precompute_neighbours(
    index_dir: str | Path,
    k: int = 2,
    batch_size: int = 1024,
    gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    never_from: tuple[str, ...] = (),
    query_chunks: int = 1,
    encoder=None,
) -> Path:
    """Writes `neighbours-k<k>.npy` ([N, k] int64, best first, -1 = none) into the version folder.

    Chunks of removed documents are never neighbours. Each batch asks faiss for k + (chunks of the
    batch's longest document) + (chunks of removed documents) results, so the filters still leave
    k whenever k eligible chunks of other documents exist (exact for a Flat index; an IVF index may
    return fewer, which then show as -1).

    `never_from`: doc-id prefixes whose documents are never anyone's neighbour, for training
    material that no serving index holds (question-and-answer documents: `Recipe.passage_neighbours`).
    Such a table has its own file name (`index.layout.neighbours_file`) and is found by an exact
    inner-product search over the eligible chunks' stored embeddings, whatever the version's store:
    the excluded chunks can be half of a training index, too many to filter out of a top-k.

    `query_chunks` (with `never_from` only): the never_from documents' chunks are queried with
    their text and that of up to `query_chunks - 1` chunks before them in their document, embedded
    by `encoder` (default: the version's MiniLM backend on the CPU); other chunks keep their own
    stored embedding as the query. The table has its own file name.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if query_chunks < 1:
        raise ValueError(f"query_chunks must be >= 1, got {query_chunks}")
    never_from = tuple(never_from)
    if query_chunks > 1 and not never_from:
        raise ValueError(
            "query_chunks > 1 needs never_from: it widens the queries of those documents' chunks"
        )
    version_dir = resolve_version_dir(index_dir)
    manifest = read_json(version_dir / MANIFEST)
    arrays = VersionArrays.open(version_dir, manifest)
    n_chunks, embeddings, doc_index = arrays.n_chunks, arrays.embeddings, arrays.doc_index
    chunks_per_doc = np.bincount(doc_index, minlength=manifest["n_documents"]) if n_chunks else np.zeros(0)
    removed_doc = np.zeros(manifest["n_documents"], dtype=bool)
    removed_doc[[t["doc_index"] for t in read_removed(version_dir, manifest)]] = True
    started = time.perf_counter()  # the wide queries' encoding counts in the table's seconds
    if never_from:
        doc_ids = [d["doc_id"] for d in read_documents(version_dir, manifest["n_documents"])]
        never_doc = np.array([d.startswith(never_from) for d in doc_ids], dtype=bool)
        vectors = _ExactSubset(embeddings, np.nonzero(~(removed_doc | never_doc)[doc_index])[0])
        n_removed_chunks = 0  # the subset holds no removed chunk
        if query_chunks > 1:
            embeddings = _WideQueries(
                # a document's first chunk has nothing before it: its stored embedding is its query
                version_dir,
                manifest,
                arrays,
                never_doc[doc_index] & (arrays.position > 0),
                query_chunks,
                encoder,
            )
    else:
        n_removed_chunks = int(chunks_per_doc[removed_doc].sum()) if n_chunks else 0
        vectors = open_vector_store(version_dir, manifest, gpu)
    final = version_dir / neighbours_file(k, never_from, query_chunks)
    with replacing(final) as tmp:
        table = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int64, shape=(n_chunks, k))
        for lo in range(0, n_chunks, batch_size):
            hi = min(n_chunks, lo + batch_size)
            own = doc_index[lo:hi]
            k_search = min(vectors.ntotal, k + int(chunks_per_doc[own].max()) + n_removed_chunks)
            if k_search == 0:  # nothing is eligible
                found = np.full((hi - lo, k), -1, dtype=np.int64)
            else:
                _, found = vectors.search(np.asarray(embeddings[lo:hi]), k_search)
            found_docs = doc_index[np.maximum(found, 0)]
            keep = (found >= 0) & (found_docs != own[:, None]) & ~removed_doc[found_docs]
            # Stable sort puts kept columns first in their original (best-first) order.
            order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
            picked = np.take_along_axis(found, order, axis=1)
            picked[~np.take_along_axis(keep, order, axis=1)] = -1
            if picked.shape[1] < k:
                picked = np.pad(picked, ((0, 0), (0, k - picked.shape[1])), constant_values=-1)
            table[lo:hi] = picked
            if progress:
                progress(hi, n_chunks)
        table.flush()
        del table
    info = {"k": k, "n_chunks": n_chunks, "faiss_factory": manifest["faiss_factory"]}
    info["n_removed"] = manifest.get("n_removed", 0)  # the tombstones it left out
    if never_from:
        info["never_from"] = sorted(never_from)
        info["search"] = "exact inner product over the eligible chunks"
    if query_chunks > 1:
        info["query_chunks"] = query_chunks
    info["seconds"] = round(time.perf_counter() - started, 3)
    write_atomic(version_dir / neighbours_info_file(k, never_from, query_chunks), json.dumps(info))
    return final


class _WideQueries:
    """The query vectors of a precompute, rows as the stored embeddings: a chunk of a left-out
    (never_from) document gets the embedding of its text with up to n - 1 chunks before it in its
    document, encoded once up front; every other chunk its stored embedding."""

    def __init__(self, version_dir: Path, manifest: dict, arrays, wide: np.ndarray, n: int, encoder):
        from tokenizers import Tokenizer

        if encoder is None:
            from index.encoder import ChunkEncoder

            encoder = ChunkEncoder("cpu", backend=manifest.get("encoder_backend") or "torch")
        if getattr(encoder, "dim", manifest["embedding_dim"]) != manifest["embedding_dim"]:
            raise ValueError(
                f"the encoder gives {encoder.dim}-d vectors, the index holds {manifest['embedding_dim']}"
            )
        tokenizer = Tokenizer.from_file(str(version_dir / TOKENIZER_FILE))
        self.stored = arrays.embeddings
        self.rows = np.nonzero(wide)[0]
        self.row_of = np.full(len(wide), -1, dtype=np.int64)
        self.row_of[self.rows] = np.arange(len(self.rows))
        # [rows, n * m]: the chunk after its n - 1 predecessors; a document's chunks are contiguous
        # rows and position counts them from 0, so a predecessor beyond the start is padding
        tokens, pad = np.asarray(arrays.tokens), manifest["pad_id"]
        position = np.asarray(arrays.position)[self.rows]
        windows = np.full((len(self.rows), n, tokens.shape[1]), pad, dtype=tokens.dtype)
        for back in range(n):
            inside = position >= back
            windows[inside, n - 1 - back] = tokens[self.rows[inside] - back]
        texts = decode_chunks(tokenizer, windows.reshape(len(self.rows), -1), pad)
        self.vectors = (
            encoder.encode(texts) if texts else np.zeros((0, manifest["embedding_dim"]), np.float32)
        )

    def __getitem__(self, rows: slice) -> np.ndarray:
        out = np.array(self.stored[rows], dtype=np.float32)
        ids = np.arange(len(self.row_of))[rows]
        wide = self.row_of[ids] >= 0
        out[wide] = self.vectors[self.row_of[ids[wide]]]
        return out


class _ExactSubset:
    """An exact inner-product search over some rows of the stored embeddings; returns store ids."""

    def __init__(self, embeddings: np.ndarray, rows: np.ndarray, batch: int = 65536):
        import faiss

        self.rows = rows.astype(np.int64)
        self.ntotal = len(rows)
        self.index = faiss.IndexFlatIP(embeddings.shape[1])
        for lo in range(0, len(rows), batch):
            self.index.add(np.ascontiguousarray(embeddings[rows[lo : lo + batch]], dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, found = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, np.where(found >= 0, self.rows[np.maximum(found, 0)], -1)


class TrainingChunks:
    """Read-only views of one version for training: chunks, documents, continuations, neighbours.

    tokens [N, m] int32, doc_index [N] int64, position [N] int32, continuation [N] int64 (-1 =
    none), neighbours [n_precomputed, k] int64 (-1 = none; None until precomputed), doc_ids [D],
    titles [D].
    """

    def __init__(
        self,
        index_dir: str | Path,
        k: int | None = None,
        never_from: tuple[str, ...] = (),
        query_chunks: int = 1,
    ):
        self.version_dir = resolve_version_dir(index_dir)
        self.manifest = read_json(self.version_dir / MANIFEST)
        self.chunk_size: int = self.manifest["chunk_size"]
        self.pad_id: int = self.manifest["pad_id"]
        self.n_chunks: int = self.manifest["n_chunks"]
        self._arrays = VersionArrays.open(self.version_dir, self.manifest)
        self.tokens = self._arrays.tokens
        self.doc_index = self._arrays.doc_index
        self.position = self._arrays.position
        self.continuation = continuation_ids(self.doc_index)
        documents = read_documents(self.version_dir, self.manifest["n_documents"])
        self.doc_ids = [d["doc_id"] for d in documents]
        self.titles = [d.get("title") or "" for d in documents]
        # documents removed from the index (tombstones): training reads none of their chunks
        self.removed_docs = np.zeros(len(self.doc_ids), dtype=bool)
        self.removed_docs[[t["doc_index"] for t in read_removed(self.version_dir, self.manifest)]] = True
        self.neighbours: np.ndarray | None = None
        self.never_from = tuple(never_from)  # doc-id prefixes the neighbour table leaves out
        self.query_chunks = query_chunks  # chunks of text the left-out documents' chunks queried with
        if k is not None:
            self.neighbours = self.neighbour_table(k)

    def neighbour_table(self, k: int) -> np.ndarray:
        """The precomputed [N, k] table of k nearest chunks (with this view's `never_from`), mapped."""
        path = self.version_dir / neighbours_file(k, self.never_from, self.query_chunks)
        if not path.is_file():
            never = f", never_from={self.never_from}" if self.never_from else ""
            never += f", query_chunks={self.query_chunks}" if self.query_chunks > 1 else ""
            raise ValueError(
                f"no {path.name} in {self.version_dir}: run precompute_neighbours(…, k={k}{never}) first"
            )
        return np.load(path, mmap_mode="r")

    @property
    def n_precomputed(self) -> int:
        return 0 if self.neighbours is None else len(self.neighbours)

    def neighbour_tokens(self, chunk_ids: np.ndarray, window: int = 2) -> np.ndarray:
        """[..., window*m] int64: the chunk and its next window - 1 chunks (RETRO's chunk +
        continuation at window 2) for chunk ids of any shape (-1 -> all pad_id)."""
        return self._arrays.with_continuations(chunk_ids, self.pad_id, window)

    def doc_chunks(self, doc_id: str) -> np.ndarray:
        """The chunk ids of one document, in order."""
        try:
            doc = self.doc_ids.index(doc_id)
        except ValueError:
            raise ValueError(f"unknown doc_id {doc_id!r}") from None
        return np.nonzero(np.asarray(self.doc_index) == doc)[0]
