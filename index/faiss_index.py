"""The faiss vector store: inner-product search over L2-normalised chunk embeddings.

This module owns choosing, training, searching, growing and saving a faiss index; `FaissIndex`
is the faiss implementation of `index.vector_store.VectorStore`. Small stores get an exact `Flat`
index; above `EXACT_LIMIT` vectors `choose_factory` picks IVF (with PQ beyond `PQ_LIMIT`, its code
size derived from the dimension); any faiss factory string may be given instead (e.g.
"HNSW32,Flat"). What kind of index it is (IVF, PQ, HNSW) is read from the index itself with
`faiss.downcast_index`, never parsed from the factory string. When `faiss.get_num_gpus() > 0` the
same code moves the index to the GPUs with `index_cpu_to_all_gpus` (faiss contrib style: GPU is
optional and automatic, never a separate code path); HNSW has no GPU version and stays on the CPU.
It knows nothing of documents or tokens.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 200_000  # below this, exact search is fast enough (CPU ~2k queries/s at 100k x 384)
PQ_LIMIT = 5_000_000  # above this, IVF-Flat's memory (1.5 KB per vector) is compressed with PQ
DEFAULT_NPROBE = 32
TRAIN_POINTS_PER_LIST = 64  # faiss warns below 39 points per centroid
GPU_MAX_K = 2048  # faiss GPU search returns at most this many results per query
PQ_DIMS_PER_CODE_BYTE = 8  # IVF-PQ code size: 384-d vectors -> 48 bytes (32x smaller than float32)


def choose_factory(n_vectors: int, dim: int) -> str:
    """ "Flat" for small stores, "IVF<nlist>,Flat" for medium, "IVF<nlist>,PQ<m>" for large ones
    (m = `pq_subquantizers(dim)`: PQ48 for the 384-d MiniLM encoder)."""
    if n_vectors < EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))  # the usual 4*sqrt(n) rule, a power of 2
    return f"IVF{nlist},Flat" if n_vectors < PQ_LIMIT else f"IVF{nlist},PQ{pq_subquantizers(dim)}"


def pq_subquantizers(dim: int) -> int:
    """PQ's number of sub-quantizers (code bytes per vector at 8 bits each) for dim dimensions:
    one byte per `PQ_DIMS_PER_CODE_BYTE` dimensions, lowered to a divisor of dim (faiss needs m | d)."""
    m = max(1, dim // PQ_DIMS_PER_CODE_BYTE)
    while dim % m:
        m -= 1
    return m


def use_gpu(gpu: bool | None = None) -> bool:
    """None = automatic: on the GPU when faiss was built with CUDA and sees a device."""
    available = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    if gpu and not available:
        raise ValueError("a GPU faiss index was asked for, but faiss sees no GPU (is faiss-gpu installed?)")
    return available if gpu is None else gpu


def _inner_index(cpu_index: faiss.Index) -> faiss.Index:
    """The index itself, typed (downcast), behind an optional transform (OPQ, PCA)."""
    index = faiss.downcast_index(cpu_index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def _ivf_of(cpu_index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index inside cpu_index, typed (downcast); None when it is not an IVF index."""
    ivf = faiss.try_extract_index_ivf(cpu_index)
    return None if ivf is None else faiss.downcast_index(ivf)


_PQ_TYPES = (faiss.IndexPQ, faiss.IndexIVFPQ, faiss.IndexPQFastScan, faiss.IndexIVFPQFastScan)


class FaissIndex:
    """A faiss index over unit vectors (inner product = cosine); ids are insertion order 0..n-1.

    `factory` is the faiss factory string it was made with (the manifest records it); the index's
    kind is read from `cpu_index` itself."""

    def __init__(self, cpu_index: faiss.Index, factory: str, gpu: bool | None = None, nprobe: int = 0):
        self.factory = factory
        self.dim = cpu_index.d
        inner, ivf = _inner_index(cpu_index), _ivf_of(cpu_index)
        self.on_gpu = use_gpu(gpu) and not isinstance(inner, faiss.IndexHNSW)
        if self.on_gpu:
            options = faiss.GpuMultipleClonerOptions()
            # fp16 PQ lookup tables: GPU IVF-PQ needs them for many sub-quantizers; Flat stays fp32
            # so that GPU and CPU search agree (tests/index/test_faiss_index.py).
            options.useFloat16 = isinstance(ivf if ivf is not None else inner, _PQ_TYPES)
            self.index = faiss.index_cpu_to_all_gpus(cpu_index, co=options)
        else:
            self.index = cpu_index
        self.nprobe = nprobe or DEFAULT_NPROBE
        if ivf is not None:
            space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
            space.set_index_parameter(self.index, "nprobe", self.nprobe)

    @property
    def concurrent_search(self) -> bool:
        """False on a GPU: a GPU faiss index must not be searched from two threads at once."""
        return not self.on_gpu

    @classmethod
    def build(
        cls, vectors: np.ndarray, factory: str | None = None, gpu: bool | None = None, seed: int = 0
    ) -> FaissIndex:
        """Trains (if the factory needs it) on a seeded sample of `vectors`, then adds them all."""
        vectors = _as_float32(vectors)
        factory = factory or choose_factory(len(vectors), vectors.shape[1])
        try:
            cpu_index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"invalid faiss factory string {factory!r}: {e}") from e
        index = cls(cpu_index, factory, gpu)
        if not index.index.is_trained:
            ivf = _ivf_of(cpu_index)
            nlist = ivf.nlist if ivf is not None else 256
            sample_size = min(len(vectors), max(nlist, 256) * TRAIN_POINTS_PER_LIST)
            if len(vectors) < nlist:
                raise ValueError(f"factory {factory!r} needs at least {nlist} vectors, got {len(vectors)}")
            sample = np.random.default_rng(seed).choice(len(vectors), sample_size, replace=False)
            started = time.perf_counter()
            index.index.train(vectors[np.sort(sample)])
            log.info("trained %s on %d vectors in %.1fs", factory, sample_size, time.perf_counter() - started)
        index.add(vectors)
        return index

    @property
    def ntotal(self) -> int:
        """The number of vectors held."""
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, batch_size: int = 65536) -> None:
        vectors = _as_float32(vectors)
        for start in range(0, len(vectors), batch_size):
            self.index.add(vectors[start : start + batch_size])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [n, k] float32, ids [n, k] int64); missing results are score -inf, id -1.

        On a GPU at most GPU_MAX_K results exist per query; the rest are padding."""
        queries = _as_float32(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k_searched = min(k, max(self.ntotal, 1), GPU_MAX_K if self.on_gpu else k)
        if len(queries) == 0 or self.ntotal == 0:
            scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
            return scores, np.full((len(queries), k), -1, dtype=np.int64)
        scores, ids = self.index.search(queries, k_searched)
        if k_searched < k:
            scores = np.pad(scores, ((0, 0), (0, k - k_searched)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, k - k_searched)), constant_values=-1)
        scores[ids < 0] = -np.inf  # IVF returns -1 ids with a large negative score for empty slots
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def save(self, path: str | Path) -> None:
        cpu_index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        faiss.write_index(cpu_index, str(path))

    @classmethod
    def load(cls, path: str | Path, factory: str, gpu: bool | None = None, nprobe: int = 0) -> FaissIndex:
        return cls(faiss.read_index(str(path)), factory, gpu, nprobe)


def _as_float32(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a [n, dim] array of vectors, got shape {vectors.shape}")
    return vectors
