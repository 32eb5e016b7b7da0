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

from index.build import build_index
from index.chunker import chunk_token_lists, decode_chunks, tokenize_texts
from index.corpus import read_sources
from index.encoder import ChunkEncoder
from index.faiss_index import VectorIndex
from index.retriever import Retriever
from index.store import IndexStore
from retro.tokenizer import Tokenizer


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
    t0 = time.perf_counter()
    embeddings = encoder.encode(texts)
    encoder_before = n / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as out:
        report = build_index(documents, out, tokenizer, encoder, chunk_size=args.chunk_size)
        build_rate = report.n_chunks / report.build_seconds
        t0 = time.perf_counter()
        encoder.encode(texts)
        encoder_after = n / (time.perf_counter() - t0)
        encoder_rate = (encoder_before + encoder_after) / 2
        rows.append(
            (
                "encoder alone (before / after build)",
                f"{n:,} chunks",
                f"{encoder_before:,.1f} / {encoder_after:,.1f} chunks/s",
            )
        )
        rows.append(
            (
                "build end-to-end",
                f"{report.n_chunks:,} chunks",
                f"{build_rate:,.1f} chunks/s ({report.build_seconds:.1f}s)",
            )
        )
        rows.append(("build / encoder rate (separate runs)", "", f"{100 * build_rate / encoder_rate:.1f}%"))
        # Immune to load drift between runs: the encoder's rate inside this very build.
        encoding_share = report.embed_seconds / report.build_seconds
        rows.append(
            (
                "build / encoder rate (same run: encode time / build time)",
                f"{report.embed_seconds:.1f}s of {report.build_seconds:.1f}s",
                f"{100 * encoding_share:.1f}%",
            )
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
    exact = VectorIndex.build(embeddings, "Flat")
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
        approximate = VectorIndex.build(embeddings, factory)
        build_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, ids = approximate.search(queries, args.k)
        rate = len(queries) / (time.perf_counter() - t0)
        recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids, strict=True)])
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
