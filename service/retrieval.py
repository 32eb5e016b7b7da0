"""The live index as the service sees it: a swappable handle and a per-request neighbour recorder.

`IndexHandle` holds the serving (store, retriever) pair and swaps it atomically for a rebuilt
version: a request takes one snapshot at its start and uses it to the end, so a swap never fails a
request. `NeighbourRecorder` is the `retrieve` callable handed to a model's `stream`: it searches,
returns the neighbours' tokens as the index stores them (the model fits them to its own length)
and records each chunk's neighbours (numbered in call order, as a model retrieves prompt chunks
first, then one per new chunk, each with the query text that found it) for the response.
This module owns no HTTP and no model.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from index.encoder import embedding_precision
from index.retriever import Retriever
from index.store import IndexStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSnapshot:
    store: IndexStore
    retriever: Retriever

    def info(self) -> dict:
        manifest = self.store.manifest
        return {
            "version": self.store.version,
            "documents": self.store.n_live_documents,  # removed documents are not counted
            "chunks": self.store.n_live_chunks,
            "removed_documents": self.store.n_removed_documents,
            "chunk_size": self.store.chunk_size,
            "encoder": manifest.get("encoder"),
            "faiss_factory": manifest.get("faiss_factory"),
            "retrieval": self.retriever.mode,
        }


def shared_encoder(device: str = "auto", backend: str = "auto", cache: Path | None = None):
    """One MiniLM per device, backend and process: every app and index version share it (read-only)."""
    return _shared_encoder(device, backend, cache)  # one cache key however the caller spells it


@functools.lru_cache(maxsize=4)
def _shared_encoder(device: str, backend: str, cache: Path | None):
    from index.encoder import ChunkEncoder

    return ChunkEncoder(device, backend=backend, onnx_cache=cache)


class IndexHandle:
    """The serving index; `current` is read without a lock (one reference), `reopen` replaces it."""

    def __init__(
        self,
        path: Path,
        tokenizer,
        device: str = "auto",
        retrieval: str = "dense",
        encoder_backend: str = "auto",
        encoder_cache: Path | None = None,
        window: int = 2,
    ):
        self.path, self.tokenizer, self.device, self.retrieval = Path(path), tokenizer, device, retrieval
        self.window = window  # chunks a neighbour shows (`index.retriever.Retriever`)
        # loaded now, so that the first request is not the slow one
        encoder = shared_encoder(device, encoder_backend, encoder_cache)
        store = IndexStore.open(self.path, tokenizer, encoder=encoder, device=device)
        built, serving = store.manifest.get("encoder_backend"), getattr(encoder, "backend", None)
        if embedding_precision(built) != embedding_precision(serving):
            # Allowed (the vectors are close), but additions through the API would mix the two.
            log.warning(
                "the index %s holds %s vectors (encoder backend %s); queries and additions use %s",
                store.version,
                embedding_precision(built),
                built or "torch",
                serving,
            )
        self.current = self._snapshot(store, encoder)
        self._swap_lock = threading.Lock()

    def _snapshot(self, store: IndexStore, encoder) -> IndexSnapshot:
        retriever = Retriever(store, encoder=encoder, mode=self.retrieval, window=self.window)
        if retriever.mode != "dense":
            retriever.lexical_index()  # built now (before serving, or before the swap), not on a request
        return IndexSnapshot(store, retriever)

    @property
    def encoder(self):
        return self.current.store.encoder

    def reopen(self) -> IndexSnapshot:
        """Opens the index folder's CURRENT version (after a rebuild switched it) and serves it."""
        with self._swap_lock:
            store = IndexStore.open(self.path, self.tokenizer, encoder=self.encoder, device=self.device)
            self.current = self._snapshot(store, self.encoder)
            return self.current


def neighbour_record(neighbours, for_chunk: int | None = None, query: str | None = None) -> list[dict]:
    """The JSON form of one query's neighbours (padding rows, chunk id -1, are left out); with
    `for_chunk`, each also names the model's chunk it was retrieved for and the `query` text searched."""
    records = []
    for i in range(len(neighbours.chunk_ids)):
        chunk_id = int(neighbours.chunk_ids[i])
        if chunk_id < 0:
            continue
        record = {
            "doc_id": neighbours.doc_ids[i],
            "chunk_id": chunk_id,
            "score": round(float(neighbours.scores[i]), 6),
            "text": neighbours.texts[i],
        }
        if for_chunk is not None:
            record["for_chunk"] = for_chunk
        if query is not None:
            record["query"] = query
        records.append(record)
    return records


class NeighbourRecorder:
    """retrieve(texts) -> int64 [len(texts), k, window*m] (chunk + continuations); keeps what it found."""

    def __init__(self, snapshot: IndexSnapshot, k: int, on_latency: Callable[[float], None] | None = None):
        self.snapshot, self.k = snapshot, k
        self.records: list[dict] = []
        self.seconds = 0.0
        self._next_chunk = 0
        self._on_latency = on_latency or (lambda seconds: None)

    def __call__(self, texts: list[str]) -> np.ndarray:
        started = time.perf_counter()
        found = self.snapshot.retriever.search(list(texts), self.k)
        elapsed = time.perf_counter() - started
        self._on_latency(elapsed)
        return self.keep(found, elapsed, texts)

    def keep(self, found: list, seconds: float, texts: list[str]) -> np.ndarray:
        """Records neighbours searched for this request with `texts` (here, or in one search for a
        batch of requests, `service.batching`) and returns their tokens as `__call__` does."""
        self.seconds += seconds
        for neighbours, text in zip(found, texts, strict=True):
            self.records.extend(neighbour_record(neighbours, for_chunk=self._next_chunk, query=text))
            self._next_chunk += 1
        return np.stack([np.asarray(n.tokens, dtype=np.int64) for n in found])
