"""The versioned on-disk store: one folder per build, a `CURRENT` pointer, live additions.

Layout of an index folder (written by `index.build`):

    OUT/CURRENT                    the name of the serving version, switched with os.replace
    OUT/versions/v0001/            one complete build:
        manifest.json              counts, fingerprints, encoder, chunk size, faiss factory, report
        tokenizer.json             the LM tokenizer the chunks were cut with
        documents.jsonl            one line per document: doc_id, source, title, first_chunk, n_chunks
        chunks.i32                 [N, chunk_size] int32 token ids (raw, memmapped)
        chunk_doc.i64, chunk_pos.i32   [N] document index and position of each chunk
        embeddings.f32             [N, 384] float32 unit vectors
        faiss-<N>.index            the vector index (the manifest names the live file)
    OUT/work/<key>/                a build in progress (resumable embedding shards)
    OUT/.build.lock                held (shared) by builds while they assemble a version; old
                                   versions are deleted by `index.prune`

The manifest's counts are the truth: rows past them (left by a crash mid-append) are ignored and
truncated by the next append. This module owns opening a version, the lock discipline (searches
share a read lock; `add_documents` holds the write lock only while it appends in memory) and live
additions. It takes a tokenizer object and an encoder and never imports `retro`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from index.chunker import TOKEN_DTYPE, chunk_token_lists, decode_chunks, tokenize_texts
from index.corpus import Document, SkippedInput
from index.faiss_index import VectorIndex

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
WORK_DIR = "work"
MANIFEST = "manifest.json"
DOCUMENTS = "documents.jsonl"
CHUNKS = "chunks.i32"
CHUNK_DOC = "chunk_doc.i64"
CHUNK_POS = "chunk_pos.i32"
EMBEDDINGS = "embeddings.f32"
APPEND_LOCK = ".append.lock"  # in each version folder: the write lock of `_version_lock`


# --- small file helpers ---------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Writes a temp file in the same folder, fsyncs it, then os.replace: readers see old or new."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_version_dir(path: str | Path) -> Path:
    """An index folder (follows CURRENT) or a version folder -> the version folder."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    current = path / CURRENT_FILE
    if not current.is_file():
        raise ValueError(
            f"{path} is not an index: no {CURRENT_FILE} file (build one with `retro index build`)"
        )
    version_dir = path / VERSIONS_DIR / current.read_text(encoding="utf-8").strip()
    if not (version_dir / MANIFEST).is_file():
        raise ValueError(f"{current} points to {version_dir}, which has no {MANIFEST}")
    return version_dir


def open_rows(path: Path, dtype, n_rows: int, width: int | None = None) -> np.ndarray:
    """A read-only memmap of the first n_rows rows (an empty array when there are none)."""
    shape = (n_rows,) if width is None else (n_rows, width)
    if n_rows == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def append_rows(path: Path, array: np.ndarray, rows_before: int) -> None:
    """Appends after exactly `rows_before` rows (dropping any tail a crash left), then fsyncs."""
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    with open(path, "r+b") as f:
        f.truncate(rows_before * row_bytes)
        f.seek(0, os.SEEK_END)
        f.write(np.ascontiguousarray(array).tobytes())
        f.flush()
        os.fsync(f.fileno())


def read_documents(version_dir: Path, n_documents: int) -> list[dict]:
    records = []
    with open(version_dir / DOCUMENTS, encoding="utf-8") as f:
        for line in f:
            if len(records) == n_documents:
                break
            records.append(json.loads(line))
    if len(records) != n_documents:
        raise ValueError(
            f"{version_dir / DOCUMENTS} has {len(records)} documents, manifest says {n_documents}"
        )
    return records


def chunks_with_continuations(
    tokens: np.ndarray, doc_index: np.ndarray, chunk_ids: np.ndarray, pad_id: int
) -> np.ndarray:
    """[..., 2*m] int64 for chunk ids of any shape: the chunk, then the next chunk of the same
    document (RETRO's continuation); all pad_id for id -1, pad_id halves where no continuation."""
    chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
    flat = chunk_ids.reshape(-1)
    n_chunks, m = tokens.shape
    out = np.full((len(flat), 2 * m), pad_id, dtype=np.int64)
    valid = flat >= 0
    if np.any(flat >= n_chunks):
        raise ValueError(f"chunk id {int(flat.max())} is out of range: the store has {n_chunks} chunks")
    out[valid, :m] = tokens[flat[valid]]
    following = flat + 1
    has_next = valid & (following < n_chunks)
    has_next[has_next] = doc_index[following[has_next]] == doc_index[flat[has_next]]
    out[has_next, m:] = tokens[following[has_next]]
    return out.reshape(*chunk_ids.shape, 2 * m)


# --- locking --------------------------------------------------------------------------------------
class ReadWriteLock:
    """Many concurrent readers (searches) or one writer (the in-memory part of an append)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            while self._writing or self._readers:
                self._cond.wait()
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


# --- the store ------------------------------------------------------------------------------------
@dataclass
class AddReport:
    n_documents: int = 0  # documents added
    n_chunks: int = 0
    seconds: float = 0.0
    skipped: list[SkippedInput] = field(default_factory=list)


@dataclass
class NearestChunks:
    """Raw search results for n queries: arrays [n, k]; tokens [n, k, 2*chunk_size]."""

    scores: np.ndarray
    chunk_ids: np.ndarray
    doc_ids: list[list[str]]
    tokens: np.ndarray


class _Snapshot:
    """Read-only views of one consistent state; replaced (never mutated) by an append."""

    def __init__(self, version_dir: Path, n_chunks: int, chunk_size: int, dim: int):
        self.n_chunks = n_chunks
        self.tokens = open_rows(version_dir / CHUNKS, TOKEN_DTYPE, n_chunks, chunk_size)
        self.doc_index = open_rows(version_dir / CHUNK_DOC, np.int64, n_chunks)
        self.position = open_rows(version_dir / CHUNK_POS, np.int32, n_chunks)
        self.embeddings = open_rows(version_dir / EMBEDDINGS, np.float32, n_chunks, dim)


class IndexStore:
    """One version of an index, opened for search and live additions (thread-safe)."""

    def __init__(
        self, version_dir: Path, tokenizer, encoder=None, gpu: bool | None = None, device: str = "auto"
    ):
        self.version_dir = Path(version_dir)
        self.manifest = read_json(self.version_dir / MANIFEST)
        if self.manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.version_dir} has index format {self.manifest.get('format')}, expected 1")
        expected = self.manifest["tokenizer_fingerprint"]
        if tokenizer.fingerprint != expected:
            raise ValueError(
                f"tokenizer mismatch: the index at {self.version_dir} was built with tokenizer "
                f"{expected[:12]}, this one is {tokenizer.fingerprint[:12]}; load the index's own "
                f"tokenizer ({self.version_dir / 'tokenizer.json'}) or rebuild the index"
            )
        self.tokenizer = tokenizer
        self._encoder = encoder
        self._device = device
        self._check_encoder(encoder)
        self.chunk_size: int = self.manifest["chunk_size"]
        self.pad_id: int = self.manifest["pad_id"]
        self.dim: int = self.manifest["embedding_dim"]
        self._documents = read_documents(self.version_dir, self.manifest["n_documents"])
        self._doc_index_of = {d["doc_id"]: i for i, d in enumerate(self._documents)}
        self._snapshot = _Snapshot(self.version_dir, self.manifest["n_chunks"], self.chunk_size, self.dim)
        self.vectors = VectorIndex.load(
            self.version_dir / self.manifest["faiss_file"], self.manifest["faiss_factory"], gpu
        )
        if self.vectors.ntotal != self._snapshot.n_chunks:
            raise ValueError(
                f"{self.manifest['faiss_file']} holds {self.vectors.ntotal} vectors, the manifest "
                f"{self._snapshot.n_chunks} chunks: the version is damaged, rebuild it"
            )
        self._rw = ReadWriteLock()
        self._add_lock = threading.Lock()
        # A GPU faiss index must not be searched from two threads at once.
        self._search_lock = threading.Lock() if self.vectors.on_gpu else None

    @classmethod
    def open(
        cls, path: str | Path, tokenizer, encoder=None, gpu: bool | None = None, device: str = "auto"
    ) -> IndexStore:
        """Opens an index folder's CURRENT version (or a version folder given directly)."""
        return cls(resolve_version_dir(path), tokenizer, encoder, gpu, device)

    # --- properties -----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.version_dir.name

    @property
    def n_chunks(self) -> int:
        return self._snapshot.n_chunks

    @property
    def n_documents(self) -> int:
        return len(self._documents)

    @property
    def encoder(self):
        """The chunk encoder: the one given to `open`, else a ChunkEncoder made on first use."""
        if self._encoder is None:
            from index.encoder import ChunkEncoder

            self._encoder = ChunkEncoder(self._device)
            self._check_encoder(self._encoder)
        return self._encoder

    def _check_encoder(self, encoder) -> None:
        if encoder is not None and encoder.name != self.manifest["encoder"]:
            raise ValueError(f"the index was embedded with {self.manifest['encoder']}, not {encoder.name}")

    def document(self, doc_index: int) -> dict:
        return self._documents[doc_index]

    def has_document(self, doc_id: str) -> bool:
        return doc_id in self._doc_index_of

    def chunk_tokens(self, chunk_ids: np.ndarray) -> np.ndarray:
        """[n, chunk_size] int32 token ids of the given chunks (a copy)."""
        return np.asarray(self._snapshot.tokens[np.asarray(chunk_ids, dtype=np.int64)])

    # --- search ---------------------------------------------------------------------------------
    @contextmanager
    def _reading(self):
        with self._rw.read():
            if self._search_lock is None:
                yield
            else:
                with self._search_lock:
                    yield

    def nearest_chunks(
        self, vectors: np.ndarray, k: int, exclude_doc_ids: list[set[str]] | None = None
    ) -> NearestChunks:
        """The k nearest chunks per query vector, skipping chunks of each query's excluded documents.

        Exclusion is exact: the search asks for k + (chunks of the excluded documents) results, so
        k survive the filter whenever the store holds k eligible chunks. Rows with fewer results
        are padded: score -inf, chunk id -1, doc id "", tokens pad_id.
        """
        n = len(vectors)
        if exclude_doc_ids is not None and len(exclude_doc_ids) != n:
            raise ValueError(f"exclude_doc_ids has {len(exclude_doc_ids)} entries for {n} queries")
        with self._reading():
            snapshot, documents = self._snapshot, self._documents
            excluded = [self._excluded_indices(ids) for ids in exclude_doc_ids or [set()] * n]
            extra = max((sum(documents[i]["n_chunks"] for i in doc_set) for doc_set in excluded), default=0)
            found_scores, found_ids = self.vectors.search(vectors, k + extra)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        chunk_ids = np.full((n, k), -1, dtype=np.int64)
        for row in range(n):
            keep = found_ids[row] >= 0
            if excluded[row]:
                keep &= ~np.isin(snapshot.doc_index[np.maximum(found_ids[row], 0)], list(excluded[row]))
            kept = np.nonzero(keep)[0][:k]
            scores[row, : len(kept)] = found_scores[row, kept]
            chunk_ids[row, : len(kept)] = found_ids[row, kept]
        tokens = self.chunks_with_continuations(chunk_ids, snapshot)
        doc_ids = [
            [documents[snapshot.doc_index[c]]["doc_id"] if c >= 0 else "" for c in row] for row in chunk_ids
        ]
        return NearestChunks(scores=scores, chunk_ids=chunk_ids, doc_ids=doc_ids, tokens=tokens)

    def _excluded_indices(self, doc_ids: Iterable[str]) -> set[int]:
        return {self._doc_index_of[d] for d in doc_ids if d in self._doc_index_of}

    def chunks_with_continuations(
        self, chunk_ids: np.ndarray, snapshot: _Snapshot | None = None
    ) -> np.ndarray:
        """[..., 2*chunk_size] int64: each chunk then its continuation; pad_id for -1 or no continuation."""
        snapshot = snapshot or self._snapshot
        return chunks_with_continuations(snapshot.tokens, snapshot.doc_index, chunk_ids, self.pad_id)

    # --- live additions -------------------------------------------------------------------------
    def add_documents(
        self, documents: Iterable[Document], skipped: list[SkippedInput] | None = None
    ) -> AddReport:
        """Appends documents (chunks, embeddings, index entries) to this version, persisted.

        Tokenizing and encoding run before the version's file lock is taken; searches are
        blocked only while the new rows enter the in-memory index. Documents whose doc_id is
        already present are skipped. Raises ValueError if another process (another IndexStore)
        extended this version since it was opened here: reopen, then add.
        """
        started = time.perf_counter()
        report = AddReport(skipped=list(skipped or []))
        with self._add_lock:
            batch, seen = [], set()
            for document in documents:
                if document.doc_id in self._doc_index_of or document.doc_id in seen:
                    report.skipped.append(SkippedInput(document.doc_id, "doc_id already in the index"))
                elif not document.text.strip():
                    report.skipped.append(SkippedInput(document.doc_id, "empty"))
                else:
                    seen.add(document.doc_id)
                    batch.append(document)
            if not batch:
                report.seconds = time.perf_counter() - started
                return report
            chunks = chunk_token_lists(
                tokenize_texts(self.tokenizer, [d.text for d in batch]), self.chunk_size, self.pad_id
            )
            embeddings = self.encoder.encode(decode_chunks(self.tokenizer, chunks.tokens, self.pad_id))
            with _version_lock(self.version_dir):
                self._append(batch, chunks, embeddings)
                report.n_documents, report.n_chunks = len(batch), len(chunks)
                report.seconds = time.perf_counter() - started
                self._persist_addition(report)
        return report

    def _append(self, batch: list[Document], chunks, embeddings: np.ndarray) -> None:
        """Files first (rows past the manifest's counts are invisible), then memory; the caller
        then writes the faiss file and the manifest. Runs under the version's file lock."""
        on_disk = read_json(self.version_dir / MANIFEST)
        if (
            on_disk["n_chunks"] != self._snapshot.n_chunks
            or on_disk["faiss_file"] != self.manifest["faiss_file"]
        ):
            raise ValueError(
                f"{self.version_dir} was extended by another process since it was opened here; "
                "reopen the index before adding documents"
            )
        n_docs_before, n_chunks_before = len(self._documents), self._snapshot.n_chunks
        counts = np.bincount(chunks.doc_index, minlength=len(batch))
        firsts = n_chunks_before + np.cumsum(counts) - counts
        records = [
            {
                "doc_id": d.doc_id,
                "source": d.source,
                "title": d.title,
                "first_chunk": int(f),
                "n_chunks": int(c),
            }
            for d, f, c in zip(batch, firsts, counts, strict=True)
        ]
        append_rows(self.version_dir / CHUNKS, chunks.tokens, n_chunks_before)
        append_rows(self.version_dir / CHUNK_DOC, chunks.doc_index + n_docs_before, n_chunks_before)
        append_rows(self.version_dir / CHUNK_POS, chunks.position, n_chunks_before)
        append_rows(self.version_dir / EMBEDDINGS, embeddings, n_chunks_before)
        _append_documents(self.version_dir / DOCUMENTS, records, n_docs_before)
        snapshot = _Snapshot(self.version_dir, n_chunks_before + len(chunks), self.chunk_size, self.dim)
        with self._rw.write():  # the only moment searches wait
            self.vectors.add(embeddings)
            self._documents = self._documents + records
            self._doc_index_of.update({r["doc_id"]: n_docs_before + i for i, r in enumerate(records)})
            self._snapshot = snapshot

    def _persist_addition(self, report: AddReport) -> None:
        old_file = self.manifest["faiss_file"]
        new_file = f"faiss-{self._snapshot.n_chunks}.index"
        with self._reading():
            self.vectors.save(self.version_dir / f".{new_file}.tmp")
        os.replace(self.version_dir / f".{new_file}.tmp", self.version_dir / new_file)
        manifest = dict(self.manifest)
        manifest.update(
            n_documents=len(self._documents),
            n_chunks=self._snapshot.n_chunks,
            n_tokens=manifest["n_tokens"]
            + int(np.count_nonzero(self._snapshot.tokens[-report.n_chunks :] != self.pad_id)),
            faiss_file=new_file,
            additions=[*manifest.get("additions", []), {**asdict(report), "time": time.time()}],
        )
        write_atomic(self.version_dir / MANIFEST, json.dumps(manifest, indent=1))
        self.manifest = manifest
        if old_file != new_file:
            (self.version_dir / old_file).unlink(missing_ok=True)


@contextmanager
def _version_lock(version_dir: Path):
    """An exclusive advisory lock: one appending process per version at a time."""
    with open(version_dir / APPEND_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def copy_serving_version(index_dir: str | Path, dest: str | Path) -> Path:
    """Copies the version an index serves into `dest` as a one-version index (`dest/CURRENT`,
    `dest/versions/<name>`) and returns `dest`: somewhere to add documents without touching the
    original. The copy is taken under the version's write lock, so no live addition is half in it."""
    version_dir = resolve_version_dir(index_dir)
    dest = Path(dest)
    target = dest / VERSIONS_DIR / version_dir.name
    with _version_lock(version_dir):
        shutil.copytree(version_dir, target, ignore=shutil.ignore_patterns(".*"))
    write_atomic(dest / CURRENT_FILE, version_dir.name + "\n")
    return dest


def _append_documents(path: Path, records: list[dict], n_before: int) -> None:
    """Appends JSON lines after exactly n_before lines (dropping a crash's partial tail)."""
    with open(path, "rb") as f:
        keep = 0
        for _ in range(n_before):
            keep += len(f.readline())
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.seek(0, os.SEEK_END)
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
