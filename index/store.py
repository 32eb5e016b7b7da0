"""The live store: one version of an index opened for search, live additions and removals.

This module owns searching a version (with exact exclusion of given documents), appending
documents to it while it serves, crash-safely: files first (rows past the manifest's counts are
invisible, `index.layout`), then memory, then the vector file and the manifest, and removing
documents: a tombstone line per document appended to `removed.jsonl`, then the manifest's
`n_removed`, then memory. A removed document's rows stay in the files and the vector index, but no
search returns them again (searches reach past them) and its doc_id is free: adding that id again
makes a new document. The lock discipline (`index.locks`): searches share a read lock;
`add_documents` and `remove_documents` hold the version's file lock while they write and the
in-memory write lock only while the new state enters the index. The folder layout is
`index.layout`'s, the arrays are opened by `index.version`, the vectors are a
`index.vector_store.VectorStore`. It takes a tokenizer object and an encoder and never imports
`retro`.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import index.encoder  # as a module: tests and the CLI swap its ChunkEncoder
from index.chunker import chunk_token_lists, decode_chunks, tokenize_texts
from index.corpus import Document, SkippedInput
from index.layout import (
    CHUNK_DOC,
    CHUNK_POS,
    CHUNKS,
    CURRENT_FILE,
    DOCUMENTS,
    EMBEDDINGS,
    FORMAT_VERSION,
    MANIFEST,
    REMOVED,
    TOKENIZER_FILE,
    VERSIONS_DIR,
    append_lines,
    append_rows,
    read_documents,
    read_json,
    read_removed,
    replacing,
    resolve_version_dir,
    vector_file,
    write_atomic,
)
from index.locks import ReadWriteLock, version_lock
from index.vector_store import open_vector_store, store_of
from index.version import VersionArrays


@dataclass
class AddReport:
    n_documents: int = 0  # documents added
    n_chunks: int = 0
    seconds: float = 0.0
    skipped: list[SkippedInput] = field(default_factory=list)
    outcomes: list[str | None] = field(
        default_factory=list
    )  # per document given, in order: None if added, else why not
    replaced: list[str] = field(
        default_factory=list
    )  # doc ids added in place of one of theirs (replace=True)


DOC_REMOVED, DOC_NOT_FOUND, DOC_ALREADY_REMOVED = "removed", "not_found", "already_removed"


@dataclass
class RemoveReport:
    doc_ids: list[str] = field(default_factory=list)  # as given
    outcomes: list[str] = field(default_factory=list)  # per doc id: removed, not_found, already_removed
    n_documents: int = 0  # documents removed
    n_chunks: int = 0  # their chunks, no longer retrievable
    seconds: float = 0.0


@dataclass(frozen=True)
class Removals:
    """The removed documents of a version (sorted doc indices) and their chunk ids (sorted);
    replaced whole by a removal, so a search holds one consistent set."""

    doc_indices: np.ndarray
    chunk_ids: np.ndarray

    @classmethod
    def of(cls, doc_indices, documents: list[dict]) -> Removals:
        docs = np.unique(np.asarray(list(doc_indices), dtype=np.int64))
        chunks = [
            np.arange(documents[i]["first_chunk"], documents[i]["first_chunk"] + documents[i]["n_chunks"])
            for i in docs.tolist()
        ]
        return cls(docs, np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.doc_indices)


@dataclass
class NearestChunks:
    """Raw search results for n queries: arrays [n, k]; tokens [n, k, 2*chunk_size]."""

    scores: np.ndarray
    chunk_ids: np.ndarray
    doc_ids: list[list[str]]
    tokens: np.ndarray


class IndexStore:
    """One version of an index, opened for search, live additions and removals (thread-safe)."""

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
                f"tokenizer ({self.version_dir / TOKENIZER_FILE}) or rebuild the index"
            )
        self.tokenizer = tokenizer
        self._encoder = encoder
        self._device = device
        self._check_encoder(encoder)
        self.chunk_size: int = self.manifest["chunk_size"]
        self.pad_id: int = self.manifest["pad_id"]
        self.dim: int = self.manifest["embedding_dim"]
        self._documents = read_documents(self.version_dir, self.manifest["n_documents"])
        tombstones = read_removed(self.version_dir, self.manifest)
        if any(not 0 <= t["doc_index"] < len(self._documents) for t in tombstones):
            raise ValueError(f"{self.version_dir / REMOVED} names a document the version lacks: damaged")
        self._removals = Removals.of((t["doc_index"] for t in tombstones), self._documents)
        removed = set(self._removals.doc_indices.tolist())
        self._doc_index_of = {d["doc_id"]: i for i, d in enumerate(self._documents) if i not in removed}
        self._removed_ids = {self._documents[i]["doc_id"] for i in removed}  # "already removed"
        # One consistent state of the arrays; replaced (never mutated) by an append.
        self._snapshot = VersionArrays.open(self.version_dir, self.manifest)
        self.vectors = open_vector_store(self.version_dir, self.manifest, gpu)
        if self.vectors.ntotal != self._snapshot.n_chunks:
            raise ValueError(
                f"{self.manifest['faiss_file']} holds {self.vectors.ntotal} vectors, the manifest "
                f"{self._snapshot.n_chunks} chunks: the version is damaged, rebuild it"
            )
        self._rw = ReadWriteLock()
        self._add_lock = threading.Lock()
        self._search_lock = None if self.vectors.concurrent_search else threading.Lock()

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
        """Document rows, removed ones included (`document(i)` takes 0..n_documents-1)."""
        return len(self._documents)

    @property
    def n_removed_documents(self) -> int:
        return len(self._removals)

    @property
    def n_live_documents(self) -> int:
        """Documents a search can return: n_documents less the removed ones."""
        return len(self._documents) - len(self._removals)

    @property
    def n_live_chunks(self) -> int:
        """Chunks a search can return: n_chunks (the rows) less the removed documents' chunks."""
        return self._snapshot.n_chunks - len(self._removals.chunk_ids)

    def removed_chunk_ids(self) -> np.ndarray:
        """The sorted chunk ids of removed documents (never returned by a search)."""
        return self._removals.chunk_ids

    @property
    def encoder(self):
        """The chunk encoder: the one given to `open`, else a ChunkEncoder made on first use."""
        if self._encoder is None:
            self._encoder = index.encoder.ChunkEncoder(self._device)
            self._check_encoder(self._encoder)
        return self._encoder

    def _check_encoder(self, encoder) -> None:
        if encoder is not None and encoder.name != self.manifest["encoder"]:
            raise ValueError(f"the index was embedded with {self.manifest['encoder']}, not {encoder.name}")

    def document(self, doc_index: int) -> dict:
        return self._documents[doc_index]

    def has_document(self, doc_id: str) -> bool:
        """Whether doc_id names a live document (False once it is removed)."""
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
        self, vectors: np.ndarray, k: int, exclude_doc_ids: list[set[str]] | None = None, window: int = 2
    ) -> NearestChunks:
        """The k nearest chunks per query vector, skipping removed documents and each query's
        excluded documents.

        Both filters are exact: a row whose first results are filtered out is searched again,
        deeper, up to k + (chunks of its excluded and of the removed documents) results, so k
        survive whenever the store holds k eligible chunks (for an exact index; an approximate
        one returns what its probes reach). Rows with fewer results are padded: score -inf,
        chunk id -1, doc id "", tokens pad_id. `tokens` shows each chunk in a window of `window`
        chunks (`chunks_with_continuations`).
        """
        vectors = np.asarray(vectors)
        n = len(vectors)
        if exclude_doc_ids is not None and len(exclude_doc_ids) != n:
            raise ValueError(f"exclude_doc_ids has {len(exclude_doc_ids)} entries for {n} queries")
        with self._reading():
            snapshot, documents, removals = self._snapshot, self._documents, self._removals
            excluded = [self._excluded_indices(ids) for ids in exclude_doc_ids or [set()] * n]
            scores, chunk_ids = self._filtered_search(vectors, k, excluded, removals, snapshot.doc_index)
        tokens = self.chunks_with_continuations(chunk_ids, snapshot, window)
        doc_ids = [
            [documents[snapshot.doc_index[c]]["doc_id"] if c >= 0 else "" for c in row] for row in chunk_ids
        ]
        return NearestChunks(scores=scores, chunk_ids=chunk_ids, doc_ids=doc_ids, tokens=tokens)

    def _filtered_search(
        self, vectors: np.ndarray, k: int, excluded: list[set[int]], removals: Removals, doc_index
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, chunk ids) [n, k] without chunks of removed or excluded documents. A row is
        searched first as deep as its excluded chunks need (twice that when documents were
        removed), then four times deeper while filtering leaves it short and the store has more."""
        n = len(vectors)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        chunk_ids = np.full((n, k), -1, dtype=np.int64)
        documents = self._documents
        extra = [sum(documents[i]["n_chunks"] for i in doc_set) for doc_set in excluded]
        exact = [k + e + len(removals.chunk_ids) for e in extra]  # enough for any row
        pending = list(range(n))
        depth = max((k + e for e in extra), default=k)
        if len(removals):
            depth = min(max(exact, default=k), 2 * depth)
        while pending:
            found_scores, found_ids = self.vectors.search(vectors[pending], depth)
            short = []
            for j, row in enumerate(pending):
                ids = found_ids[j]
                keep = ids >= 0
                docs = doc_index[np.maximum(ids, 0)]
                if len(removals):
                    keep &= ~np.isin(docs, removals.doc_indices)
                if excluded[row]:
                    keep &= ~np.isin(docs, list(excluded[row]))
                kept = np.nonzero(keep)[0][:k]
                if len(kept) < k and depth < exact[row] and bool(np.all(ids >= 0)):
                    short.append(row)  # filtered short while the store may hold more
                    continue
                scores[row, : len(kept)] = found_scores[j, kept]
                chunk_ids[row, : len(kept)] = ids[kept]
            pending = short
            depth = min(max((exact[row] for row in short), default=depth), 4 * depth)
        return scores, chunk_ids

    def _excluded_indices(self, doc_ids: Iterable[str]) -> set[int]:
        return {self._doc_index_of[d] for d in doc_ids if d in self._doc_index_of}

    def chunk_doc_ids(self, chunk_ids: np.ndarray) -> list[str]:
        """The doc id of each chunk id ("" for -1)."""
        with self._rw.read():
            doc_index, documents = self._snapshot.doc_index, self._documents
            return [
                documents[doc_index[c]]["doc_id"] if c >= 0 else "" for c in np.asarray(chunk_ids).tolist()
            ]

    def chunk_titles(self, chunk_ids: np.ndarray) -> list[str]:
        """The title of each chunk's document ("" for -1 or a document without one)."""
        with self._rw.read():
            doc_index, documents = self._snapshot.doc_index, self._documents
            return [
                (documents[doc_index[c]].get("title") or "") if c >= 0 else ""
                for c in np.asarray(chunk_ids).tolist()
            ]

    def chunks_with_continuations(
        self, chunk_ids: np.ndarray, snapshot: VersionArrays | None = None, window: int = 2
    ) -> np.ndarray:
        """[..., window*chunk_size] int64: each chunk then the next window - 1 chunks of its document
        (window 2: RETRO's chunk + continuation); pad_id for -1 or past the document's end."""
        return (snapshot or self._snapshot).with_continuations(chunk_ids, self.pad_id, window)

    # --- live additions -------------------------------------------------------------------------
    def add_documents(
        self, documents: Iterable[Document], skipped: list[SkippedInput] | None = None, replace: bool = False
    ) -> AddReport:
        """Appends documents (chunks, embeddings, index entries) to this version, persisted.

        Tokenizing and encoding run before the version's file lock is taken; searches are
        blocked only while the new rows enter the in-memory index. Documents whose doc_id is
        already present are skipped, or with `replace` added in place of the present one: its
        removal and the new document's addition are one commit (one manifest write), so a search,
        a reopen and a crash see the old document or the new one, never both and never neither.
        Raises ValueError if another process (another IndexStore) extended this version since it
        was opened here: reopen, then add.
        """
        started = time.perf_counter()
        report = AddReport(skipped=list(skipped or []))
        with self._add_lock:
            batch, seen, replaced = [], set(), {}
            for document in documents:
                present = document.doc_id in self._doc_index_of
                if present and not replace:
                    reason = "doc_id already in the index"
                elif document.doc_id in seen:
                    reason = "doc_id given twice: the first one was added"
                elif not document.text.strip():
                    reason = "empty"
                else:
                    reason = None
                    seen.add(document.doc_id)
                    batch.append(document)
                    if present:
                        replaced[document.doc_id] = self._doc_index_of[document.doc_id]
                if reason is not None:
                    report.skipped.append(SkippedInput(document.doc_id, reason))
                report.outcomes.append(reason)
            if not batch:
                report.seconds = time.perf_counter() - started
                return report
            chunks = chunk_token_lists(
                tokenize_texts(self.tokenizer, [d.text for d in batch]), self.chunk_size, self.pad_id
            )
            embeddings = self.encoder.encode(decode_chunks(self.tokenizer, chunks.tokens, self.pad_id))
            with version_lock(self.version_dir):
                self._append(batch, chunks, embeddings, replaced)
                report.n_documents, report.n_chunks = len(batch), len(chunks)
                report.replaced = list(replaced)
                report.seconds = time.perf_counter() - started
                self._persist_addition(report)
        return report

    def _append(
        self, batch: list[Document], chunks, embeddings: np.ndarray, replaced: dict[str, int]
    ) -> None:
        """Files first (rows past the manifest's counts are invisible; so are the tombstones of the
        `replaced` documents, doc id -> doc index, past its `n_removed`), then memory; the caller
        then writes the faiss file and the manifest. Runs under the version's file lock."""
        self._check_unchanged_on_disk("adding documents")
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
        append_lines(self.version_dir / DOCUMENTS, records, n_docs_before)
        removals = self._removals
        if replaced:
            self._append_tombstones(replaced)
            removals = self._removals_with(replaced)
        snapshot = VersionArrays.open(self.version_dir, self.manifest, n_chunks_before + len(chunks))
        with self._rw.write():  # the only moment searches wait
            self.vectors.add(embeddings)
            self._documents = self._documents + records
            self._doc_index_of.update({r["doc_id"]: n_docs_before + i for i, r in enumerate(records)})
            self._snapshot = snapshot
            self._removals = removals

    def _check_unchanged_on_disk(self, doing: str) -> None:
        """Raises ValueError when another process added to or removed from this version since it
        was opened here (its manifest moved on). Runs under the version's file lock."""
        on_disk = read_json(self.version_dir / MANIFEST)
        if (
            on_disk["n_chunks"] != self._snapshot.n_chunks
            or on_disk["faiss_file"] != self.manifest["faiss_file"]
            or on_disk.get("n_removed", 0) != self.manifest.get("n_removed", 0)
        ):
            raise ValueError(
                f"{self.version_dir} was extended by another process, or had documents removed by "
                f"one, since it was opened here; reopen the index before {doing}"
            )

    def _persist_addition(self, report: AddReport) -> None:
        old_file = self.manifest["faiss_file"]
        new_file = vector_file(self._snapshot.n_chunks, store_of(self.manifest))
        with self._reading(), replacing(self.version_dir / new_file) as tmp:
            self.vectors.save(tmp)
        manifest = dict(self.manifest)
        manifest.update(
            n_documents=len(self._documents),
            n_chunks=self._snapshot.n_chunks,
            n_tokens=manifest["n_tokens"]
            + int(np.count_nonzero(self._snapshot.tokens[-report.n_chunks :] != self.pad_id)),
            faiss_file=new_file,
            additions=[*manifest.get("additions", []), {**asdict(report), "time": time.time()}],
        )
        if report.replaced:  # their tombstones, written by `_append`, count from this commit on
            manifest["n_removed"] = manifest.get("n_removed", 0) + len(report.replaced)
        write_atomic(self.version_dir / MANIFEST, json.dumps(manifest, indent=1))
        self.manifest = manifest
        if old_file != new_file:
            (self.version_dir / old_file).unlink(missing_ok=True)

    # --- removals -------------------------------------------------------------------------------
    def remove_documents(self, doc_ids: Iterable[str]) -> RemoveReport:
        """Removes documents from this version, persisted: from the moment it returns no search
        returns their chunks, `has_document` says False, and a reopen (another process too) sees
        them removed; their doc ids may be added again, as new documents.

        Each doc id's outcome, in order: "removed", "not_found" (never in this version) or
        "already_removed" (removed before, or earlier in the same call). Crash-safe: a tombstone
        line per document is appended to removed.jsonl, then the manifest's `n_removed` replaced;
        a crash in between leaves lines past the count, which are ignored and overwritten. Raises
        ValueError if another process changed this version since it was opened here: reopen.
        """
        started = time.perf_counter()
        report = RemoveReport(doc_ids=list(doc_ids))
        with self._add_lock:
            chosen: dict[str, int] = {}
            for doc_id in report.doc_ids:
                if doc_id in self._doc_index_of and doc_id not in chosen:
                    chosen[doc_id] = self._doc_index_of[doc_id]
                    report.outcomes.append(DOC_REMOVED)
                elif doc_id in chosen or doc_id in self._removed_ids:
                    report.outcomes.append(DOC_ALREADY_REMOVED)
                else:
                    report.outcomes.append(DOC_NOT_FOUND)
            if chosen:
                with version_lock(self.version_dir):
                    self._check_unchanged_on_disk("removing documents")
                    self._write_tombstones(chosen)
                report.n_documents = len(chosen)
                report.n_chunks = sum(self._documents[i]["n_chunks"] for i in chosen.values())
        report.seconds = time.perf_counter() - started
        return report

    def _append_tombstones(self, chosen: dict[str, int]) -> int:
        """Tombstone lines for `chosen` (doc id -> doc index) past the manifest's `n_removed`, where
        they count only once a manifest says so; returns that count. Under the version's file lock."""
        now = time.time()
        records = [
            {"doc_id": d, "doc_index": i, "n_chunks": self._documents[i]["n_chunks"], "time": now}
            for d, i in chosen.items()
        ]
        before = self.manifest.get("n_removed", 0)
        path = self.version_dir / REMOVED
        path.touch(exist_ok=True)
        append_lines(path, records, before)
        return before + len(records)

    def _removals_with(self, chosen: dict[str, int]) -> Removals:
        """This version's removals and `chosen` (doc id -> doc index) together."""
        return Removals.of([*self._removals.doc_indices.tolist(), *chosen.values()], self._documents)

    def _write_tombstones(self, chosen: dict[str, int]) -> None:
        """Tombstone lines, then the manifest, then memory. Runs under the version's file lock."""
        manifest = {**self.manifest, "n_removed": self._append_tombstones(chosen)}
        write_atomic(self.version_dir / MANIFEST, json.dumps(manifest, indent=1))
        removals = self._removals_with(chosen)
        with self._rw.write():  # the only moment searches wait
            self.manifest = manifest
            self._removals = removals
            for doc_id in chosen:
                del self._doc_index_of[doc_id]
            self._removed_ids.update(chosen)


def copy_serving_version(index_dir: str | Path, dest: str | Path) -> Path:
    """Copies the version an index serves into `dest` as a one-version index (`dest/CURRENT`,
    `dest/versions/<name>`) and returns `dest`: somewhere to add documents without touching the
    original. The copy is taken under the version's write lock, so no live addition is half in it."""
    version_dir = resolve_version_dir(index_dir)
    dest = Path(dest)
    target = dest / VERSIONS_DIR / version_dir.name
    with version_lock(version_dir):
        shutil.copytree(version_dir, target, ignore=shutil.ignore_patterns(".*"))
    write_atomic(dest / CURRENT_FILE, version_dir.name + "\n")
    return dest
