"""The index builder: documents -> a new, complete version folder -> an atomic switch of CURRENT.

This module owns the build's order of work and its crash safety. Everything is written into
`OUT/work/<key>/` (the key hashes the corpus fingerprint and the settings, so a rerun of the same
build finds it): the embeddings in shards of `shard_size` chunks, each written to a temp file and
renamed, while a producer thread tokenizes ahead. A rerun re-tokenizes (deterministic, cheap) and
skips finished shards. Only when every shard exists is
the version folder assembled (under a hidden name, renamed when complete) and `CURRENT` replaced,
so a build killed at any moment leaves the previous version serving. From the hidden folder to the
switch it holds the build lock (`index.locks.building`); `index.prune` then deletes versions
beyond `keep_versions` (all are kept by default). The file names are `index.layout`'s, the vector
index is whatever `index.vector_store.build_vector_store` makes in the store chosen (faiss, or a
Milvus collection; by default the store the CURRENT version uses). It never imports `retro`.

A build too large for one machine is sliced (docs/scale.md): N workers each run `embed_slice`
on a share of the documents into the same work folder (`index.slices` keeps the books), and one
`build_index` then assembles the version from their shards, encoding only what is missing, or,
with `assemble=True`, nothing at all; the version is the one a one-worker build makes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from index.chunker import ChunkArrays, chunk_token_lists, decode_chunks, tokenize_texts
from index.corpus import Document, SkippedInput
from index.encoder import embedding_precision
from index.layout import (
    CHUNK_DOC,
    CHUNK_POS,
    CHUNKS,
    CURRENT_FILE,
    DOCUMENTS,
    EMBEDDINGS,
    FORMAT_VERSION,
    MANIFEST,
    STAGING_PREFIX,
    VERSIONS_DIR,
    WORK_DIR,
    atomic_writer,
    read_json,
    resolve_version_dir,
    vector_file,
    write_atomic,
)
from index.locks import building
from index.prune import prune_versions
from index.slices import (
    Slice,
    SliceReport,
    check_slice_conflicts,
    load_slice_chunks,
    other_sliced_builds,
    parse_slice,
    read_slice_done,
    save_slice_chunks,
    slice_bounds,
    slice_count,
    slice_dir,
    write_settings,
    write_slice_done,
)
from index.vector_store import FAISS, build_vector_store, check_vector_store, store_of

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64
DEFAULT_SHARD_SIZE = 4096
# progress(stage, done, total): stages "tokenize", "embed" (called after each shard), "index", "done".
Progress = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    version: str
    version_dir: str
    n_documents: int
    n_chunks: int
    n_tokens: int
    faiss_factory: str
    build_seconds: float
    shards: int
    shards_reused: int  # finished shards found from an interrupted earlier run
    embed_seconds: float  # encoder time in this run (the benchmark compares rates with it)
    skipped: list[SkippedInput] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # old versions deleted after the switch
    vector_store: str = "faiss"  # the manifest's: "faiss" or "milvus:URI"
    slices: int = 0  # the slices it was assembled from (index.slices); 0 for a one-worker build


def corpus_fingerprint(documents: list[Document]) -> str:
    digest = hashlib.sha256()
    for d in documents:
        digest.update(d.doc_id.encode("utf-8") + b"\x00" + d.text.encode("utf-8") + b"\x00")
    return digest.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_writer(path, binary=True) as f:
        np.save(f, array)


def _current_store(out_dir: Path) -> str:
    """The vector store of the version out_dir serves; faiss when it serves none yet."""
    try:
        version_dir = resolve_version_dir(out_dir)
    except ValueError:
        return FAISS
    return store_of(read_json(version_dir / MANIFEST))


def _next_version_name(versions: Path) -> str:
    numbers = [int(p.name[1:]) for p in versions.glob("v[0-9]*") if p.name[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1:04d}"


def _shard_path(work: Path, shard: int) -> Path:
    return work / f"embeddings-{shard:05d}.npy"


def _shard_stream(documents, tokenizer, chunk_size, shard_size, work, pieces, docs_per_batch=1024):
    """Yields (shard, chunk texts or None if the shard is already on disk, documents tokenized,
    chunks so far) in shard order, produced by a background thread; appends ChunkArrays to pieces."""
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            buffer: list[np.ndarray] = []
            buffered, shard, total = 0, 0, 0

            def emit(rows: np.ndarray, docs_done: int) -> None:
                nonlocal shard
                done = _shard_path(work, shard).is_file()
                texts = None if done else decode_chunks(tokenizer, rows, tokenizer.pad_id)
                results.put((shard, texts, docs_done, total))
                shard += 1

            for start in range(0, len(documents), docs_per_batch):
                if stop.is_set():
                    return
                batch = documents[start : start + docs_per_batch]
                chunks = chunk_token_lists(
                    tokenize_texts(tokenizer, [d.text for d in batch]), chunk_size, tokenizer.pad_id
                )
                chunks.doc_index += start
                pieces.append(chunks)
                total += len(chunks)
                buffer.append(chunks.tokens)
                buffered += len(chunks)
                docs_done = start + len(batch)
                if buffered >= shard_size:
                    rows, offset = np.concatenate(buffer), 0
                    while len(rows) - offset >= shard_size:
                        emit(rows[offset : offset + shard_size], docs_done)
                        offset += shard_size
                    buffer, buffered = [rows[offset:]], len(rows) - offset
            if buffered:
                emit(np.concatenate(buffer), len(documents))
            results.put(None)
        except BaseException as e:  # handed to the consumer, which re-raises it
            results.put(e)

    worker = threading.Thread(target=produce, name="build-tokenize", daemon=True)
    worker.start()
    try:
        while (item := results.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                results.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.01)


def _unique_documents(documents: Iterable[Document], skipped: list[SkippedInput]) -> list[Document]:
    """The documents in order, the first of each doc_id; duplicates are added to `skipped`.
    ValueError when none is left."""
    unique: list[Document] = []
    seen: set[str] = set()
    for document in documents:
        if document.doc_id in seen:
            skipped.append(SkippedInput(document.doc_id, "duplicate doc_id"))
        else:
            seen.add(document.doc_id)
            unique.append(document)
    if not unique:
        raise ValueError(
            "the corpus has no readable documents" + (f" ({len(skipped)} inputs skipped)" if skipped else "")
        )
    return unique


def _work_settings(unique, tokenizer, encoder, chunk_size: int, shard_size: int) -> tuple[dict, str]:
    """(settings, key): what a build's work folder is keyed by, so that a rerun, or another
    worker's slice of the same build, finds it; and its key, a hash of them."""
    settings = {
        "corpus": corpus_fingerprint(unique),
        "tokenizer": tokenizer.fingerprint,
        "chunk_size": chunk_size,
        "encoder": encoder.name,
        "shard_size": shard_size,
    }
    backend = getattr(encoder, "backend", None)  # "torch", "onnx", "onnx-int8"; test encoders have none
    if embedding_precision(backend) != "fp32":  # fp32 backends share shards: the same vectors to ~1e-7
        settings["encoder_precision"] = embedding_precision(backend)
    return settings, hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Embedded:
    chunks: ChunkArrays  # of the documents given, doc_index counted from the first of them
    shards: int
    reused: int
    embed_seconds: float


def _embed_shards(documents, tokenizer, encoder, chunk_size, shard_size, work: Path, progress) -> _Embedded:
    """Tokenizes and chunks `documents` and encodes every shard of their chunk stream not yet in
    `work`: a producer thread tokenizes, chunks and decodes each unfinished shard's chunk texts
    ahead, while this thread encodes each shard as soon as it is ready, so the LM tokenizer
    overlaps the encoder (on a GPU the encoder would otherwise wait for it). Tokenization is
    deterministic, so a rerun cuts the same shards and skips those already on disk."""
    pieces: list[ChunkArrays] = []  # per document batch, in order
    reused, embed_seconds, n_chunks = 0, 0.0, 0
    progress("tokenize", 0, len(documents))
    for item in _shard_stream(documents, tokenizer, chunk_size, shard_size, work, pieces):
        shard, texts, docs_done, n_chunks = item
        progress("tokenize", docs_done, len(documents))
        if texts is None:
            reused += 1
        else:
            progress("embed", min(n_chunks, shard * shard_size), n_chunks)  # bars start (and ETA) here
            t0 = time.perf_counter()
            embeddings = encoder.encode(texts)
            embed_seconds += time.perf_counter() - t0
            _save_npy(_shard_path(work, shard), embeddings.astype(np.float32, copy=False))
        # The total grows while tokenization is still running; it is exact at the last shard.
        progress("embed", min(n_chunks, (shard + 1) * shard_size), n_chunks)
    if pieces:
        chunks = ChunkArrays(
            np.concatenate([p.tokens for p in pieces]),
            np.concatenate([p.doc_index for p in pieces]),
            np.concatenate([p.position for p in pieces]),
        )
    else:  # a slice without documents
        chunks = chunk_token_lists([], chunk_size, tokenizer.pad_id)
    return _Embedded(chunks, -(-n_chunks // shard_size), reused, embed_seconds)


def _run_slice(unique, bounds, part: Slice, work, tokenizer, encoder, chunk_size, shard_size, progress):
    """Embeds slice `part` (documents bounds[i]:bounds[i+1]) into its folder of `work`, resuming
    from the shards on disk; nothing is done when the slice is complete already."""
    started = time.perf_counter()
    first, end = bounds[part.index], bounds[part.index + 1]
    folder = slice_dir(work, part)
    record = read_slice_done(folder, first, end, _shard_path)
    already_done = record is not None
    if record is None:
        folder.mkdir(parents=True, exist_ok=True)
        done = _embed_shards(unique[first:end], tokenizer, encoder, chunk_size, shard_size, folder, progress)
        doc_index = done.chunks.doc_index.astype(np.int64) + first  # of the whole corpus
        save_slice_chunks(folder, done.chunks.tokens, doc_index, done.chunks.position)
        record = {
            "slice": str(part),
            "first_document": first,
            "end_document": end,
            "n_chunks": len(done.chunks),
            "shards": done.shards,
            "shards_reused": done.reused,
            "embed_seconds": round(done.embed_seconds, 3),
            "seconds": round(time.perf_counter() - started, 3),
            "host": platform.node(),
        }
        write_slice_done(folder, record)  # last: the slice is done once this file is there
        log.info("slice %s: %d chunks of documents %d:%d", part, len(done.chunks), first, end)
    return SliceReport(
        slice=str(part),
        work_dir=str(folder),
        first_document=first,
        end_document=end,
        n_chunks=record["n_chunks"],
        shards=record["shards"],
        shards_reused=record["shards"] if already_done else record["shards_reused"],
        embed_seconds=0.0 if already_done else record["embed_seconds"],
        seconds=time.perf_counter() - started,
        already_done=already_done,
    )


def embed_slice(
    documents: Iterable[Document],
    out_dir: str | Path,
    tokenizer,
    encoder,
    part: Slice | str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    shard_size: int = DEFAULT_SHARD_SIZE,
    skipped: list[SkippedInput] | None = None,
    progress: Progress | None = None,
) -> SliceReport:
    """One worker's share of a sliced build: embeds slice `part` ("I/N") of the documents into
    `out_dir`/work/<key>/ (`index.slices`), resuming what a killed run of it left; makes no
    version. Every worker is given the same documents and settings; once all N slices are done,
    `build_index(..., assemble=True)` makes the one version from them. ValueError for a bad slice
    spec, and when `out_dir` holds slices of another count or of a build with other settings."""
    progress = progress or (lambda stage, done, total: None)
    part = parse_slice(part) if isinstance(part, str) else part
    out_dir = Path(out_dir)
    unique = _unique_documents(documents, list(skipped or []))
    settings, key = _work_settings(unique, tokenizer, encoder, chunk_size, shard_size)
    work = out_dir / WORK_DIR / key
    work.mkdir(parents=True, exist_ok=True)
    write_settings(work, settings, len(unique))  # before the check: two racing workers see each other
    check_slice_conflicts(out_dir, key, settings, len(unique), part)
    bounds = slice_bounds([len(d.text) for d in unique], part.count)
    report = _run_slice(unique, bounds, part, work, tokenizer, encoder, chunk_size, shard_size, progress)
    progress("done", report.n_chunks, report.n_chunks)
    return report


def _finished_slices(out_dir, key, work, settings, unique, count, assemble, run_slice) -> list[SliceReport]:
    """Every slice of the build in `work`, done: with `assemble`, all must be finished already
    (ValueError naming those that are not); otherwise the missing shards are encoded here."""
    others = other_sliced_builds(out_dir, key, settings, len(unique))
    hint = f"; {others[0]}" if others else ""
    if count is None:
        raise ValueError(
            f"nothing to assemble: {work} holds no slice of this build (run `retro index build ... "
            f"--slice I/N` on every worker first, with the same sources and settings){hint}"
        )
    bounds = slice_bounds([len(d.text) for d in unique], count)
    parts = [Slice(i, count) for i in range(count)]
    if assemble:
        missing = []
        for part in parts:
            first, end = bounds[part.index], bounds[part.index + 1]
            if read_slice_done(slice_dir(work, part), first, end, _shard_path) is None:
                on_disk = len(list(slice_dir(work, part).glob("embeddings-*.npy")))
                missing.append(f"{part} ({on_disk} shards on disk)")
        if missing:
            raise ValueError(
                f"cannot assemble: {len(missing)} of {count} slices are not finished: {', '.join(missing)}; "
                f"rerun their workers (they resume), or build without --assemble to encode what they "
                f"miss here{hint}"
            )
    return [run_slice(bounds, part) for part in parts]


def build_index(
    documents: Iterable[Document],
    out_dir: str | Path,
    tokenizer,
    encoder,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    factory: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    skipped: list[SkippedInput] | None = None,
    sources: list[str] | None = None,
    gpu: bool | None = None,
    progress: Progress | None = None,
    keep_versions: int | None = None,
    vector_store: str | None = None,
    assemble: bool = False,
) -> BuildReport:
    """Builds a new version of the index in `out_dir` and makes it CURRENT.

    `skipped` carries the corpus readers' bad inputs into the report; duplicate doc_ids and
    documents without tokens are added to it. Raises ValueError when no document is left.
    `keep_versions` (None: keep all) deletes the oldest versions after the switch, so that at most
    that many remain (`index.prune.prune_versions`); a failure there is logged, not raised.
    `vector_store` is "faiss" or "milvus:URI" (`index.vector_store.parse_vector_store`); None keeps
    the store of the version CURRENT names (so a rebuild stays where it was), faiss for a new index.

    When workers have embedded slices of this same build (`embed_slice`), the version is assembled
    from them: the same version a one-worker build makes. Slices not finished are encoded here,
    unless `assemble` is set: then every slice must be done (ValueError naming those that are
    not, or saying there are none), and nothing is encoded.
    """
    if keep_versions is not None and keep_versions < 1:
        raise ValueError(f"keep_versions must be >= 1 or None (keep all), got {keep_versions}")
    started = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    skipped = list(skipped or [])
    out_dir = Path(out_dir)
    vector_store = check_vector_store(vector_store if vector_store is not None else _current_store(out_dir))
    unique = _unique_documents(documents, skipped)
    settings, key = _work_settings(unique, tokenizer, encoder, chunk_size, shard_size)
    work = out_dir / WORK_DIR / key
    if not assemble:  # an assembly only reads slices: a failed one leaves no empty work folder behind
        work.mkdir(parents=True, exist_ok=True)

    # 1+2. Chunks and their embeddings: from this build's slices when workers made some
    # (index.slices), else tokenized and encoded here (`_embed_shards`), in shards on disk either way.
    count = slice_count(work)
    manifest_slices: dict = {}
    if (
        count is None
        and not assemble
        and (others := other_sliced_builds(out_dir, key, settings, len(unique)))
    ):
        log.warning("%s; this build encodes all of its own chunks", others[0])
    if assemble or count is not None:

        def run_slice(bounds, part):
            return _run_slice(
                unique, bounds, part, work, tokenizer, encoder, chunk_size, shard_size, progress
            )

        reports = _finished_slices(out_dir, key, work, settings, unique, count, assemble, run_slice)
        folders = [Path(r.work_dir) for r in reports]
        parts = (load_slice_chunks(folder) for folder in folders)
        shard_files = [
            _shard_path(f, i) for f, r in zip(folders, reports, strict=True) for i in range(r.shards)
        ]
        n_shards, reused = len(shard_files), sum(r.shards_reused for r in reports)
        embed_seconds = sum(r.embed_seconds for r in reports)
        manifest_slices = {"slices": len(reports), "slices_done_before": sum(r.already_done for r in reports)}
    else:
        embedded = _embed_shards(unique, tokenizer, encoder, chunk_size, shard_size, work, progress)
        chunks = embedded.chunks
        parts = iter([(chunks.tokens, chunks.doc_index, chunks.position)])
        shard_files = [_shard_path(work, i) for i in range(embedded.shards)]
        n_shards, reused, embed_seconds = embedded.shards, embedded.reused, embedded.embed_seconds

    # 3. Assemble the version folder under a hidden name; rename it only when complete.
    versions = out_dir / VERSIONS_DIR
    versions.mkdir(exist_ok=True)
    with building(out_dir):  # prune_versions leaves this build's folders alone
        staging = versions / f"{STAGING_PREFIX}{key}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        counts, n_tokens = _write_chunk_files(staging, parts, len(unique), tokenizer.pad_id)
        n_chunks = int(counts.sum())
        for d, c in zip(unique, counts, strict=True):
            if c == 0:
                skipped.append(SkippedInput(d.doc_id, "no tokens"))
        _write_embeddings(staging / EMBEDDINGS, shard_files, n_chunks, encoder.dim)
        embeddings = np.memmap(
            staging / EMBEDDINGS, dtype=np.float32, mode="r", shape=(n_chunks, encoder.dim)
        )
        firsts = np.cumsum(counts) - counts
        with open(staging / DOCUMENTS, "w", encoding="utf-8") as f:
            for d, first, count in zip(unique, firsts, counts, strict=True):
                record = {"doc_id": d.doc_id, "source": d.source, "title": d.title}
                f.write(
                    json.dumps(
                        {**record, "first_chunk": int(first), "n_chunks": int(count)}, ensure_ascii=False
                    )
                    + "\n"
                )
        progress("index", 0, n_chunks)
        vectors = build_vector_store(embeddings, factory, gpu, store=vector_store)
        faiss_file = vector_file(n_chunks, vector_store)
        vectors.save(staging / faiss_file)
        progress("index", n_chunks, n_chunks)
        tokenizer.save(staging)
        version = _next_version_name(versions)
        build_seconds = time.perf_counter() - started
        backend = getattr(encoder, "backend", None)
        manifest = {
            "format": FORMAT_VERSION,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_documents": len(unique),
            "n_chunks": n_chunks,
            "n_tokens": n_tokens,
            "chunk_size": chunk_size,
            "pad_id": int(tokenizer.pad_id),
            "vocab_size": int(tokenizer.vocab_size),
            "tokenizer_fingerprint": tokenizer.fingerprint,
            "encoder": encoder.name,
            **({"encoder_backend": backend} if backend else {}),
            "embedding_dim": int(encoder.dim),
            "vector_store": vector_store,
            "faiss_factory": vectors.factory,
            "faiss_file": faiss_file,
            "corpus_fingerprint": settings["corpus"],
            "sources": list(sources or []),
            "build_seconds": round(build_seconds, 3),
            "shards": n_shards,
            "shards_reused": reused,
            **manifest_slices,
            "skipped": [asdict(s) for s in skipped],
            "additions": [],
        }
        write_atomic(staging / MANIFEST, json.dumps(manifest, indent=1))
        os.replace(staging, versions / version)
        write_atomic(out_dir / CURRENT_FILE, version + "\n")
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):  # other interrupted builds may still have work folders
        (out_dir / WORK_DIR).rmdir()
    log.info("built %s: %d documents, %d chunks in %.1fs", version, len(unique), n_chunks, build_seconds)
    pruned: list[str] = []
    if keep_versions is not None:
        try:  # the build itself succeeded and serves: a failed clean-up must not undo that
            pruned = prune_versions(out_dir, keep_versions)
        except (OSError, ValueError) as e:
            log.warning("built %s, but pruning old versions failed: %s", version, e)
    progress("done", n_chunks, n_chunks)
    return BuildReport(
        version=version,
        version_dir=str(versions / version),
        n_documents=len(unique),
        n_chunks=n_chunks,
        n_tokens=n_tokens,
        faiss_factory=vectors.factory,
        build_seconds=build_seconds,
        shards=n_shards,
        shards_reused=reused,
        embed_seconds=embed_seconds,
        skipped=skipped,
        pruned=pruned,
        vector_store=vector_store,
        slices=manifest_slices.get("slices", 0),
    )


def _write_chunk_files(staging: Path, parts, n_documents: int, pad_id: int) -> tuple[np.ndarray, int]:
    """Writes the chunk arrays of `parts` ((tokens, doc_index, position) in chunk order, read one
    at a time) into the version's files; (chunks per document, non-pad tokens)."""
    counts = np.zeros(n_documents, dtype=np.int64)
    n_tokens = 0
    with (
        open(staging / CHUNKS, "wb") as tokens_f,
        open(staging / CHUNK_DOC, "wb") as doc_f,
        open(staging / CHUNK_POS, "wb") as pos_f,
    ):
        for tokens, doc_index, position in parts:
            tokens_f.write(np.ascontiguousarray(tokens, dtype=np.int32).tobytes())
            doc_f.write(doc_index.astype(np.int64).tobytes())
            pos_f.write(position.astype(np.int32).tobytes())
            counts += np.bincount(doc_index, minlength=n_documents)
            n_tokens += int(np.count_nonzero(tokens != pad_id))
    return counts, n_tokens


def _write_embeddings(path: Path, shard_files: list[Path], n_chunks: int, dim: int) -> None:
    """Concatenates the embedding shards; ValueError when they do not hold one row per chunk."""
    rows = 0
    with open(path, "wb") as f:
        for shard_file in shard_files:
            shard = np.load(shard_file)
            if shard.ndim != 2 or shard.shape[1] != dim:
                raise ValueError(f"{shard_file} holds vectors of shape {shard.shape}, expected [n, {dim}]")
            f.write(np.ascontiguousarray(shard, dtype=np.float32).tobytes())
            rows += len(shard)
    if rows != n_chunks:
        raise ValueError(f"the embedding shards hold {rows} vectors for {n_chunks} chunks")
