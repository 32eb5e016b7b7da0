"""Benchmark of the vector stores on a real index's embeddings: build rate, query rate, recall@k.

The encoder is left out (it is the same for every store; `benchmarks/index_build.py` and
`benchmarks/encoder_backends.py` measure it): the vectors are the MiniLM embeddings an existing
index already holds (its serving version's `embeddings.f32`). A fixed random sample of them is
held out as queries (chunks of the same corpus that the stores do not hold, so no query finds
itself); the rest go into each store through `index.vector_store.build_vector_store`, the path
`retro index build` takes. Recall@k is against exact search (faiss Flat) over the same vectors.
Queries are timed as one batch and one at a time (the service searches a request's chunk alone).

    python -m benchmarks.vector_stores --index data/index --store faiss:Flat --store milvus-lite:FLAT

A store is `faiss:FACTORY` or `milvus-lite:INDEX_TYPE` (a Milvus Lite file in a scratch folder;
`pip install .[milvus]`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.recall import recall_at_k
from index.layout import MANIFEST, read_json, resolve_version_dir
from index.vector_store import build_vector_store
from index.version import VersionArrays

DEFAULT_STORES = (
    "faiss:Flat",
    "faiss:IVF1024,Flat",
    "faiss:HNSW32,Flat",
    "milvus-lite:FLAT",
    "milvus-lite:IVF_FLAT",
    "milvus-lite:HNSW",
)


def load_embeddings(index: str, limit: int) -> np.ndarray:
    """The serving version's embeddings (the first `limit` rows when limit > 0), copied into memory."""
    version = resolve_version_dir(index)
    manifest = read_json(version / MANIFEST)
    n = manifest["n_chunks"] if limit <= 0 else min(limit, manifest["n_chunks"])
    return np.array(VersionArrays.open(version, manifest, n).embeddings)


def split_queries(vectors: np.ndarray, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(stored, queries): a fixed random sample of rows held out as queries, the rest stored."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(vectors), dtype=bool)
    held[rng.choice(len(vectors), size=min(n_queries, len(vectors) - 1), replace=False)] = True
    return vectors[~held], vectors[held]


def measure(spec: str, stored: np.ndarray, queries: np.ndarray, k: int, scratch: Path) -> dict:
    """Build `spec` over `stored`, search `queries` batched and one by one."""
    kind, _, factory = spec.partition(":")
    if kind == "faiss":
        store_spec = None
    elif kind == "milvus-lite":
        store_spec = "milvus:" + str(scratch / f"{factory.lower()}.db")
    else:
        raise SystemExit(f"unknown store {spec!r}: use faiss:FACTORY or milvus-lite:INDEX_TYPE")
    t0 = time.perf_counter()
    store = build_vector_store(stored, factory or None, store=store_spec)
    build_s = time.perf_counter() - t0
    store.search(queries[:1], k)  # warm-up: a Milvus collection loads on its first search
    t0 = time.perf_counter()
    _, ids = store.search(queries, k)
    batch_s = time.perf_counter() - t0
    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        store.search(q[None], k)
        latencies.append(time.perf_counter() - t0)
    return {
        "store": spec,
        "build_s": build_s,
        "ids": ids,
        "batch_qps": len(queries) / batch_s,
        "single_qps": len(queries) / sum(latencies),
        "p50_ms": 1000 * float(np.median(latencies)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, help="an index folder (its serving version is read)")
    parser.add_argument("--n", type=int, default=0, help="the first N vectors (0 = all)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--store", action="append", help=f"repeatable; default {', '.join(DEFAULT_STORES)}")
    args = parser.parse_args()

    stored, queries = split_queries(load_embeddings(args.index, args.n), args.queries)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"vectors: {len(stored):,} stored, {len(queries):,} held-out queries, dim {stored.shape[1]}")
    print(
        "| store | build s | vectors/s | batch queries/s | one-by-one queries/s | p50 / p99 ms "
        f"| recall@{args.k} |\n|---|---|---|---|---|---|---|",
        flush=True,
    )
    specs = list(args.store or DEFAULT_STORES)
    exact = None  # exact search first: every other row's recall is against it
    with tempfile.TemporaryDirectory() as scratch:
        for spec in ["faiss:Flat"] + [s for s in specs if s != "faiss:Flat"]:
            r = measure(spec, stored, queries, args.k, Path(scratch))
            exact = exact or r
            if spec not in specs:
                continue
            build = f"{r['build_s']:.1f} | {len(stored) / r['build_s']:,.0f}"
            search = f"{r['batch_qps']:,.0f} | {r['single_qps']:,.0f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f}"
            recall = recall_at_k(r["ids"], exact["ids"])
            print(f"| {spec} | {build} | {search} | {recall:.3f} |", flush=True)


if __name__ == "__main__":
    main()
