"""Benchmark of a sliced build: N slices embedded one after another on this machine, then the assembly.

What each worker of an N-machine build does is `index.build.embed_slice` on its own slice; here the
N slices run in turn in one process (one encoder load), each timed as a worker would see it (wall
and CPU seconds: on a shared machine the CPU figure is the steadier one), then one
`build_index(..., assemble=True)` makes the version. With --compare, a one-worker build of the same
corpus follows and the two versions are compared: chunk arrays byte for byte, the vectors' largest
difference, and the top-k ids of queries.

With --fill-docs N (0 = the whole source) a second, encoder-free run measures what does not
depend on the encoder: the slices' tokenization, chunking and shard writes (a stand-in encoder
hashes each text to a unit vector at no cost), and the assembly of their vectors into each store
asked for with --store (faiss factories, or "milvus-lite"), each from its own copy of the slices.

    python -m benchmarks.index_slices --max-docs 200 --slices 4 --compare \\
        --fill-docs 0 --store Flat --store IVF128,PQ48 --store milvus-lite
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from index.build import build_index, corpus_fingerprint, embed_slice
from index.layout import CHUNK_DOC, CHUNK_POS, CHUNKS, EMBEDDINGS, MANIFEST, WORK_DIR, read_json
from index.sources import read_sources
from index.vector_store import open_vector_store
from retro.tokenizer import Tokenizer

Row = tuple[str, str, str]


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - c0


class _HashedVectors:
    """A zero-cost stand-in encoder: each text's crc32 seeds a random unit vector."""

    name, dim = "benchmark/hashed-random", 384

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = np.stack(
            [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim) for t in texts]
        )
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class _CountingEncoder:
    """The encoder, counting what the assembly encodes (it should be nothing)."""

    def __init__(self, encoder):
        self.name, self.dim, self._encoder, self.encoded = encoder.name, encoder.dim, encoder, 0
        self.backend = getattr(encoder, "backend", None)

    def encode(self, texts, batch_size=None):
        self.encoded += len(texts)
        return self._encoder.encode(texts, batch_size)


def _slices(documents, out, tokenizer, encoder, count, common) -> list[Row]:
    rows, n_chunks, walls, cpus = [], 0, [], []
    for i in range(count):
        part = f"{i}/{count}"
        report, wall, cpu = _timed(
            lambda part=part: embed_slice(documents, out, tokenizer, encoder, part, **common)
        )
        n_chunks += report.n_chunks
        walls.append(wall)
        cpus.append(cpu)
        rows.append(
            (
                f"slice {part}: {report.end_document - report.first_document:,} documents",
                f"{report.n_chunks:,} chunks",
                f"{wall:.1f}s wall ({report.n_chunks / wall:.1f} chunks/s, encoder "
                f"{100 * report.embed_seconds / wall:.1f}% of it); {cpu:.1f} CPU-s "
                f"({report.n_chunks / max(cpu, 1e-9):.1f} chunks per CPU-s)",
            )
        )
    rows.append(
        (
            f"{count} slices one after another: sum, slowest / mean",
            f"{n_chunks:,} chunks",
            f"{sum(walls):.1f}s wall, {max(walls) / np.mean(walls):.2f}; {sum(cpus):.1f} CPU-s, "
            f"{max(cpus) / np.mean(cpus):.2f} ({n_chunks / sum(cpus):.1f} chunks per CPU-s)",
        )
    )
    return rows


def _assemble(documents, out, tokenizer, encoder, common, store: str | None = None) -> tuple[object, Row]:
    counting = _CountingEncoder(encoder)
    factory, vector_store = (
        (None, "milvus:" + str(out.parent / "milvus.db")) if store == "milvus-lite" else (store, None)
    )
    built, wall, cpu = _timed(
        lambda: build_index(documents, out, tokenizer, counting, assemble=True, factory=factory,
                            vector_store=vector_store, **common)
    )  # fmt: skip
    where = "Milvus Lite" if vector_store else "faiss"
    cpu_note = " (this process; the Milvus Lite server's CPU not counted)" if vector_store else ""
    return built, (
        f"assembly into {where} {built.faiss_factory} ({counting.encoded} chunks encoded)",
        f"{built.n_chunks:,} vectors",
        f"{wall:.2f}s wall ({built.n_chunks / wall:,.0f} vectors/s); {cpu:.2f} CPU-s{cpu_note}",
    )


def _compare(a: Path, b: Path, dim: int, k: int = 10, queries: int = 200) -> list[Row]:
    same = all((a / n).read_bytes() == (b / n).read_bytes() for n in (CHUNKS, CHUNK_DOC, CHUNK_POS))
    ea = np.fromfile(a / EMBEDDINGS, dtype=np.float32).reshape(-1, dim)
    eb = np.fromfile(b / EMBEDDINGS, dtype=np.float32).reshape(-1, dim)
    sample = ea[np.random.default_rng(0).choice(len(ea), min(queries, len(ea)), replace=False)]
    ids = [open_vector_store(v, read_json(v / MANIFEST)).search(sample, k)[1] for v in (a, b)]
    overlap = np.mean([len(set(x) & set(y)) / k for x, y in zip(*ids, strict=True)])
    return [
        ("chunk arrays (tokens, document, position)", "", "identical" if same else "DIFFER"),
        ("vectors: max |sliced - one worker|", f"{len(ea):,} x {dim}", f"{np.abs(ea - eb).max():.2e}"),
        (f"top-{k} ids, sliced vs one worker", f"{len(sample)} queries", f"{100 * overlap:.1f}% shared"),
    ]


def _print_table(title: str, rows: list[Row]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}\n\n| {'measure'.ljust(width)} | size | result |\n|{'-' * (width + 2)}|---|---|")
    for name, size, result in rows:
        print(f"| {name.ljust(width)} | {size} | {result} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="corpus source(s); default wiki-vital:train")
    parser.add_argument(
        "--max-docs", type=int, default=200, help="MiniLM run: first N documents (0: skip it)"
    )
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare", action="store_true", help="then a one-worker build, compared")
    parser.add_argument("--fill-docs", type=int, default=-1, help="encoder-free run on N documents (0 = all)")
    parser.add_argument("--store", action="append", help="for --fill-docs: a faiss factory or milvus-lite")
    args = parser.parse_args()
    sources = args.source or ["wiki-vital:train"]
    common = dict(chunk_size=args.chunk_size, shard_size=args.shard_size)

    all_documents, read_s, read_cpu = _timed(lambda: list(read_sources(sources, [])))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    n_chars = sum(len(d.text) for d in all_documents)
    print(f"corpus: {', '.join(sources)}, {len(all_documents):,} documents, {n_chars:,} characters")
    scratch = Path(tempfile.mkdtemp(prefix="retro-slices-"))
    try:
        tokenizer, train_s, train_cpu = _timed(
            lambda: Tokenizer.train((d.text for d in all_documents), args.vocab_size)
        )
        _, fingerprint_s, fingerprint_cpu = _timed(lambda: corpus_fingerprint(all_documents))
        _print_table(
            "Every worker (and the assembly) reads the corpus; the tokenizer is trained once or by each",
            [
                (
                    "read the sources",
                    f"{len(all_documents):,} documents",
                    f"{read_s:.1f}s wall, {read_cpu:.1f} CPU-s",
                ),
                (
                    "corpus fingerprint",
                    f"{n_chars:,} characters",
                    f"{fingerprint_s:.2f}s wall, {fingerprint_cpu:.2f} CPU-s",
                ),
                (f"train the {args.vocab_size}-token BPE", "", f"{train_s:.1f}s wall, {train_cpu:.1f} CPU-s"),
            ],
        )
        if args.max_docs:
            from index.encoder import ChunkEncoder

            documents = all_documents[: args.max_docs]
            encoder = ChunkEncoder(args.device)
            encoder.encode(["warm-up"] * 8)
            print(
                f"\nencoder: {encoder.name}, backend {getattr(encoder, 'backend', '?')}, device {args.device}"
            )
            rows = _slices(documents, scratch / "minilm", tokenizer, encoder, args.slices, common)
            built, row = _assemble(documents, scratch / "minilm", tokenizer, encoder, common)
            rows.append(row)
            if args.compare:
                one, wall, cpu = _timed(
                    lambda: build_index(documents, scratch / "one", tokenizer, encoder, **common)
                )
                rows.append(
                    (
                        "one-worker build of the same corpus",
                        f"{one.n_chunks:,} chunks",
                        f"{wall:.1f}s wall ({one.n_chunks / wall:.1f} chunks/s); {cpu:.1f} CPU-s "
                        f"({one.n_chunks / cpu:.1f} chunks per CPU-s)",
                    )
                )
                rows += _compare(Path(built.version_dir), Path(one.version_dir), encoder.dim)
            _print_table(f"MiniLM, {len(documents):,} documents in {args.slices} slices", rows)
            print(f"\nload average: {os.getloadavg()[0]:.2f}")
        if args.fill_docs >= 0:
            documents = all_documents[: args.fill_docs] if args.fill_docs else all_documents
            sliced = scratch / "fill" / "sliced"
            rows = _slices(documents, sliced, tokenizer, _HashedVectors(), args.slices, common)
            for i, store in enumerate(args.store or ["Flat"]):
                out = scratch / "fill" / f"store-{i}"
                shutil.copytree(sliced / WORK_DIR, out / WORK_DIR)
                rows.append(_assemble(documents, out, tokenizer, _HashedVectors(), common, store)[1])
            _print_table(
                f"No encoder (hashed vectors), {len(documents):,} documents in {args.slices} slices", rows
            )
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
