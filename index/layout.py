"""The on-disk layout of an index folder, and the helpers that write its files safely.

This module is the one place that names the files of an index (see docs/design.md, "on-disk
format"):

    OUT/CURRENT                    the name of the serving version, switched with os.replace
    OUT/.build.lock                held (shared) by builds while they assemble a version (index.locks)
    OUT/work/<key>/                a build in progress (resumable embedding shards, index.build)
    OUT/versions/.building-<key>/  a version being assembled; renamed to vNNNN when complete
    OUT/versions/.deleting-*/      a version on its way out (index.prune)
    OUT/versions/v0001/            one complete build:
        manifest.json              counts, fingerprints, encoder, chunk size, faiss factory, report
        tokenizer.json             the LM tokenizer the chunks were cut with (its own `save` writes it)
        documents.jsonl            one line per document: doc_id, source, title, first_chunk, n_chunks
        chunks.i32                 [N, chunk_size] int32 token ids (raw, memmapped)
        chunk_doc.i64, chunk_pos.i32   [N] document index and position of each chunk
        embeddings.f32             [N, dim] float32 unit vectors
        faiss-<N>.index            the vector index (the manifest names the live file), or
        milvus-<N>.json            for a Milvus-backed version: the collection it names (index.milvus_store)
        .milvus-owner              the collection this folder made (absent in a copy: it copies before adding)
        neighbours-k<k>.npy/.json  precomputed training neighbours (index.neighbours)
        removed.jsonl              tombstones, one line per removed document: doc_id, doc_index,
                                   n_chunks, time (index.store; absent until the first removal)
        .append.lock               the write lock of live additions and removals (index.locks)

The manifest's counts are the truth (`n_documents`, `n_chunks`, `n_removed` tombstone lines):
rows past them (left by a crash mid-append) are ignored and truncated by the next append
(`append_rows`, `append_lines`). Files that readers may open while
they change are replaced whole: written under a temp name in the same folder, then os.replace'd
(`replacing`, `write_atomic`), so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
# The index folder.
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
WORK_DIR = "work"
BUILD_LOCK = ".build.lock"
STAGING_PREFIX = ".building-"  # a build's version folder while it is assembled (index.build)
DELETING_PREFIX = ".deleting-"  # a version on its way out (index.prune)
# A version folder.
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
DOCUMENTS = "documents.jsonl"
CHUNKS = "chunks.i32"
CHUNK_DOC = "chunk_doc.i64"
CHUNK_POS = "chunk_pos.i32"
EMBEDDINGS = "embeddings.f32"
REMOVED = "removed.jsonl"
APPEND_LOCK = ".append.lock"
MILVUS_OWNER = ".milvus-owner"  # hidden: index.store.copy_serving_version leaves it out of a copy


def vector_file(n_chunks: int, store: str = "faiss") -> str:
    """The vector index's file name once it holds n_chunks vectors (a new name after each append);
    `store` is the manifest's `vector_store` (a Milvus-backed version keeps a pointer file)."""
    return f"milvus-{n_chunks}.json" if store.startswith("milvus") else f"faiss-{n_chunks}.index"


def _never_tag(never_from: tuple[str, ...]) -> str:
    """ "" for the plain table; "-not-<8 hex>" for one whose neighbours never come from documents
    whose ids start with one of `never_from` (a hash of the sorted prefixes: one table per set)."""
    if not never_from:
        return ""
    return "-not-" + hashlib.sha1(",".join(sorted(never_from)).encode()).hexdigest()[:8]


def _query_tag(query_chunks: int) -> str:
    """ "" for one-chunk queries; "-q<n>" for a table whose left-out documents' chunks were queried
    with n chunks of their document (`index.neighbours.precompute_neighbours`)."""
    return "" if query_chunks == 1 else f"-q{query_chunks}"


def neighbours_file(k: int, never_from: tuple[str, ...] = (), query_chunks: int = 1) -> str:
    return f"neighbours-k{k}{_never_tag(never_from)}{_query_tag(query_chunks)}.npy"


def neighbours_info_file(k: int, never_from: tuple[str, ...] = (), query_chunks: int = 1) -> str:
    return f"neighbours-k{k}{_never_tag(never_from)}{_query_tag(query_chunks)}.json"


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


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- replacing a file whole -----------------------------------------------------------------------
@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yields a temp path in path's folder to write; when the block succeeds, renames it over
    `path` with os.replace (readers see the old file or the new one). A failed block removes it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_writer(path: Path, binary: bool = False) -> Iterator:
    """An open file whose content replaces `path` when the block succeeds, fsynced first."""
    with replacing(path) as tmp, open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Replaces path's content with text (see `atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(text)


# --- appending after the manifest's counts --------------------------------------------------------
def append_rows(path: Path, array: np.ndarray, rows_before: int) -> None:
    """Appends after exactly `rows_before` rows (dropping any tail a crash left), then fsyncs."""
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    _append_after(path, rows_before * row_bytes, np.ascontiguousarray(array).tobytes())


def append_lines(path: Path, records: list[dict], lines_before: int) -> None:
    """Appends JSON lines after exactly `lines_before` lines (dropping a crash's partial tail)."""
    with open(path, "rb") as f:
        keep = 0
        for _ in range(lines_before):
            keep += len(f.readline())
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    _append_after(path, keep, data)


def _append_after(path: Path, keep_bytes: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep_bytes)
        f.seek(0, os.SEEK_END)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_documents(version_dir: Path, n_documents: int) -> list[dict]:
    """The first n_documents records of documents.jsonl (ValueError when there are fewer)."""
    return _read_lines(version_dir / DOCUMENTS, n_documents, "documents")


def read_removed(version_dir: Path, manifest: dict) -> list[dict]:
    """The tombstones the manifest counts (`n_removed`, 0 when absent): the first lines of
    removed.jsonl, each {doc_id, doc_index, n_chunks, time}; ValueError when there are fewer."""
    n_removed = manifest.get("n_removed", 0)
    if n_removed == 0:
        return []
    return _read_lines(Path(version_dir) / REMOVED, n_removed, "tombstones")


def _read_lines(path: Path, n: int, what: str) -> list[dict]:
    records = []
    if n > 0:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if len(records) == n:
                    break
                records.append(json.loads(line))
    if len(records) != n:
        raise ValueError(f"{path} has {len(records)} {what}, manifest says {n}")
    return records
