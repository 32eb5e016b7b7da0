"""Benchmark of the index: end-to-end build rate vs the encoder's own rate, and search rate/recall.

Prints a table. Build rate = chunks / seconds of `build_index` (LM tokenization, chunking, shard
writes, MiniLM encoding, faiss add, version assembly); the encoder's own rate = the same chunk
texts through `ChunkEncoder.encode` alone, measured before and after the build (the machine may be
shared: the two figures show the drift), and, immune to that drift, the share of the build's own
time spent inside the encoder (build rate / encoder rate within one run). Search: faiss-only
queries/s and recall@k against exact search for each factory, and the retriever's end-to-end
queries/s (MiniLM query encoding included).

    python -m benchmarks.index_build --source wiki-vital --max-docs 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from benchmarks.recall import recall_at_k
from index.build import build_index
from index.chunker import chunk_token_lists, decode_chunks, tokenize_texts
from index.encoder import ChunkEncoder
from index.faiss_index import FaissIndex
from index.retriever import Retriever
from index.sources import read_sources
from index.store import IndexStore
from retro.tokenizer import Tokenizer


class _Precomputed:
    """Hands back embeddings already computed (the search part needs an index, not another build)."""

    def __init__(self, encoder: ChunkEncoder, texts: list[str], embeddings: np.ndarray):
        self.name, self.dim, self._encoder = encoder.name, encoder.dim, encoder
        self._rows = {t: i for i, t in enumerate(texts)}
        self._embeddings = embeddings

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if all(t in self._rows for t in texts):
            return self._embeddings[[self._rows[t] for t in texts]]
        return self._encoder.encode(texts, batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="corpus source(s); default wiki-vital")
    parser.add_argument("--max-docs", type=int, default=1000, help="first N documents (0 = all)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="encoder batch (default 64 CPU, 512 GPU)"
    )
    parser.add_argument("--factory", action="append", help="approximate factories to compare with Flat")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1, help="alternating encoder/build runs (medians)")
    args = parser.parse_args()
    sources = args.source or ["wiki-vital"]
    factories = args.factory or ["IVF64,Flat", "HNSW32,Flat"]

    documents = list(read_sources(sources, []))
    if args.max_docs:
        documents = documents[: args.max_docs]
    tokenizer = Tokenizer.train((d.text for d in documents), vocab_size=args.vocab_size)
    encoder = ChunkEncoder(args.device)
    if args.batch_size:
        encoder.default_batch_size = args.batch_size
    chunks = chunk_token_lists(tokenize_texts(tokenizer, [d.text for d in documents]), args.chunk_size, 0)
    texts = decode_chunks(tokenizer, chunks.tokens, tokenizer.pad_id)
    n = len(texts)
    encoder.encode(texts[:64])  # warm-up: first-call allocations are not the steady state

    rows: list[tuple[str, str, str]] = []
    # Encoder alone and full builds alternate `repeats` times; medians damp a shared machine's noise.
    # CPU seconds (all threads of this process) are reported too: they measure the work done and
    # drift far less than wall time when other processes compete for the cores.
    encoder_rates, builds, encoder_cpu, build_cpu = [], [], 0.0, 0.0
    for repeat in range(args.repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        embeddings = encoder.encode(texts)
        encoder_rates.append(n / (time.perf_counter() - t0))
        encoder_cpu += time.process_time() - c0
        if repeat == args.repeats:
            break
        with tempfile.TemporaryDirectory() as scratch:
            c0 = time.process_time()
            builds.append(build_index(documents, scratch, tokenizer, encoder, chunk_size=args.chunk_size))
            build_cpu += time.process_time() - c0
    encoder_rate = float(np.median(encoder_rates))
    build_rates = [b.n_chunks / b.build_seconds for b in builds]
    build_rate = float(np.median(build_rates))
    report = builds[-1]
    rows.append(
        (
            f"encoder alone, median of {len(encoder_rates)} runs",
            f"{n:,} chunks",
            f"{encoder_rate:,.1f} chunks/s (runs: {', '.join(f'{r:.1f}' for r in encoder_rates)})",
        )
    )
    rows.append(
        (
            f"build end-to-end, median of {len(builds)} (between the encoder runs)",
            f"{report.n_chunks:,} chunks",
            f"{build_rate:,.1f} chunks/s (runs: {', '.join(f'{r:.1f}' for r in build_rates)})",
        )
    )
    rows.append(
        ("build / encoder rate (medians of separate runs)", "", f"{100 * build_rate / encoder_rate:.1f}%")
    )
    # Immune to load drift between runs: the encoder's rate inside this very build.
    embed_seconds = sum(b.embed_seconds for b in builds)
    build_seconds = sum(b.build_seconds for b in builds)
    rows.append(
        (
            "build / encoder rate (same runs: encode time / build time)",
            f"{embed_seconds:.1f}s of {build_seconds:.1f}s",
            f"{100 * embed_seconds / build_seconds:.1f}%",
        )
    )
    encoder_cpu_rate = n * len(encoder_rates) / encoder_cpu
    build_cpu_rate = sum(b.n_chunks for b in builds) / build_cpu
    cpu_share = 100 * build_cpu_rate / encoder_cpu_rate
    rows.append(
        (
            "CPU-time rates (chunks per CPU-second): encoder alone / build",
            "",
            f"{encoder_cpu_rate:,.1f} / {build_cpu_rate:,.1f} ({cpu_share:.1f}%)",
        )
    )
    with tempfile.TemporaryDirectory() as out:
        build_index(
            documents, out, tokenizer, _Precomputed(encoder, texts, embeddings), chunk_size=args.chunk_size
        )
        store = IndexStore.open(out, tokenizer, encoder)
        rng = np.random.default_rng(0)
        query_ids = rng.choice(n, size=min(args.queries, n), replace=False)
        query_texts = [texts[i] for i in query_ids]
        retriever = Retriever(store)
        t0 = time.perf_counter()
        retriever.search(query_texts, args.k)
        seconds = time.perf_counter() - t0
        rows.append(
            (
                f"retriever.search (Flat, encode included), k={args.k}",
                f"{len(query_texts):,} queries",
                f"{len(query_texts) / seconds:,.1f} queries/s",
            )
        )

    # Faiss alone, on the stored embeddings, queried with perturbed chunk embeddings.
    queries = embeddings[query_ids] + rng.normal(0, 0.02, size=(len(query_ids), embeddings.shape[1])).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = FaissIndex.build(embeddings, "Flat")
    t0 = time.perf_counter()
    _, exact_ids = exact.search(queries, args.k)
    rows.append(
        (
            f"faiss Flat, k={args.k}",
            f"{n:,} vectors",
            f"{len(queries) / (time.perf_counter() - t0):,.0f} queries/s, recall 1.000",
        )
    )
    for factory in factories:
        t0 = time.perf_counter()
        approximate = FaissIndex.build(embeddings, factory)
        build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, ids = approximate.search(queries, args.k)
        rate = len(queries) / (time.perf_counter() - t0)
        recall = recall_at_k(ids, exact_ids)
        rows.append(
            (
                f"faiss {factory}, k={args.k}",
                f"built in {build_seconds:.1f}s",
                f"{rate:,.0f} queries/s, recall@{args.k} {recall:.3f}",
            )
        )

    precision = "fp16" if encoder.fp16 else "fp32"
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"encoder: {encoder.device} ({precision}, batch {encoder.default_batch_size})")
    print(f"corpus: {', '.join(sources)}, {len(documents):,} documents")
    print(f"chunks: {n:,} of {args.chunk_size} tokens")
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | size | result |\n|{'-' * (width + 2)}|---|---|")
    for name, size, result in rows:
        print(f"| {name:<{width}} | {size} | {result} |")


if __name__ == "__main__":
    main()
