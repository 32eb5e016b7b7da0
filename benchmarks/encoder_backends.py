"""Benchmark of the chunk encoder's backends: torch, ONNX Runtime fp32 and ONNX int8 on real chunks.

Prints a table. Speed: chunks/s (wall) and chunks per CPU-second (all threads of this process) of
`ChunkEncoder.encode` on the same N chunk texts, for each backend in one run, so their ratios
share the machine's load. Vectors: cosine of each ONNX backend's embedding with torch's, per
chunk. Retrieval: a Flat inner-product index of M chunks (wiki-vital:train chunks plus the reading
set's dev passages) embedded by ONNX fp32 and again by int8; for real queries (held-out-form
questions of the reading dev set, and chunk texts that are not in the index) the agreement of
int8 with fp32: top-1 the same chunk, and recall@10 (the share of fp32's 10 nearest that int8
also returns), both for int8 queries on the int8 index and int8 queries on the fp32 index (what
querying an fp32 index with the int8 encoder gives).

    python -m benchmarks.encoder_backends --n 1024 --index-chunks 2048 --queries 200
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss
import numpy as np

from benchmarks.recall import recall_at_k
from index.chunker import chunk_token_lists, decode_chunks, tokenize_texts
from index.encoder import ChunkEncoder
from index.reading import evaluation_set
from index.sources import read_sources
from retro.tokenizer import Tokenizer


def _chunk_texts(documents, tokenizer, chunk_size: int) -> list[str]:
    chunks = chunk_token_lists(tokenize_texts(tokenizer, [d.text for d in documents]), chunk_size, 0)
    texts = decode_chunks(tokenizer, chunks.tokens, tokenizer.pad_id)
    return [t for t in texts if t.strip()]


def _timed(encoder: ChunkEncoder, texts: list[str]) -> tuple[np.ndarray, float, float]:
    encoder.encode(texts[:64])  # warm-up: first-call allocations are not the steady state
    wall, cpu = time.perf_counter(), time.process_time()
    out = encoder.encode(texts)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _search(index_vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatIP(index_vectors.shape[1])
    flat.add(index_vectors)
    return flat.search(queries, k)[1]


def _agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, recall@k of `other` against `reference`), rows are queries."""
    top1 = float(np.mean(reference[:, 0] == other[:, 0]))
    return top1, recall_at_k(other, reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="wiki-vital:train")
    parser.add_argument("--tokenizer", default="models/demo", help="the LM tokenizer the chunks are cut with")
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--n", type=int, default=1024, help="chunks timed per backend")
    parser.add_argument("--index-chunks", type=int, default=2048, help="chunks in the Flat index")
    parser.add_argument("--queries", type=int, default=200, help="questions, and as many chunk texts")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    tokenizer = Tokenizer.load(args.tokenizer)
    texts = _chunk_texts(list(read_sources([args.source], [])), tokenizer, args.chunk_size)
    dev = evaluation_set("dev")
    passages = _chunk_texts(dev.documents, tokenizer, args.chunk_size)
    questions = [item.prompt for item in dev.items if item.kind == "question"][: args.queries]
    # Every 7th chunk, so the sample spans the corpus rather than its first articles.
    sample = texts[::7]
    n_wiki = max(args.index_chunks - len(passages), args.n)
    indexed = sample[:n_wiki] + passages
    chunk_queries = sample[n_wiki : n_wiki + args.queries]
    timed = indexed[: args.n]

    started = time.perf_counter()
    rows: list[tuple[str, str]] = []
    encoders = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        t0 = time.perf_counter()
        encoders[backend] = ChunkEncoder("cpu", backend=backend)
        rows.append((f"load {backend}", f"{time.perf_counter() - t0:.1f}s"))
    vectors, rates = {}, {}
    for backend, encoder in encoders.items():
        vectors[backend], wall, cpu = _timed(encoder, timed)
        rates[backend] = (len(timed) / wall, len(timed) / cpu)
    for backend, (wall_rate, cpu_rate) in rates.items():
        ratio = wall_rate / rates["torch"][0]
        rows.append(
            (
                f"{backend}: chunks/s (wall), per CPU-second",
                f"{wall_rate:.1f}, {cpu_rate:.1f} ({ratio:.2f}x torch's wall rate, "
                f"{cpu_rate / rates['torch'][1]:.2f}x per CPU-second)",
            )
        )
    for backend in ("onnx", "onnx-int8"):
        cos = (vectors[backend] * vectors["torch"]).sum(axis=1)
        rows.append(
            (
                f"cosine {backend} vs torch ({len(timed)} chunks)",
                f"min {cos.min():.7f}, mean {cos.mean():.7f}, max |diff| "
                f"{np.abs(vectors[backend] - vectors['torch']).max():.1e}",
            )
        )

    rest = indexed[args.n :]
    fp32_index = np.concatenate([vectors["onnx"], encoders["onnx"].encode(rest)])
    int8_index = np.concatenate([vectors["onnx-int8"], encoders["onnx-int8"].encode(rest)])
    for label, queries in (("questions", questions), ("chunk texts", chunk_queries)):
        fp32_q, int8_q = encoders["onnx"].encode(queries), encoders["onnx-int8"].encode(queries)
        reference = _search(fp32_index, fp32_q, args.k)
        top1, recall = _agreement(reference, _search(int8_index, int8_q, args.k))
        mixed_top1, mixed_recall = _agreement(reference, _search(fp32_index, int8_q, args.k))
        rows.append(
            (
                f"int8 vs fp32, {len(queries)} {label}, {len(indexed)} chunks",
                f"top-1 {top1:.3f}, recall@{args.k} {recall:.3f}; int8 queries on the fp32 index: "
                f"top-1 {mixed_top1:.3f}, recall@{args.k} {mixed_recall:.3f}",
            )
        )

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"chunks: {len(timed)} timed of {args.chunk_size} LM tokens ({args.source}, every 7th), batch 64")
    print(f"index: {len(indexed)} chunks ({len(passages)} of reading:dev passages), Flat inner product")
    print(f"total {time.perf_counter() - started:.0f}s")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
