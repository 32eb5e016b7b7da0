"""The vector index: exact search equals numpy, factories by size, padding, save/load, GPU = CPU."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from index.faiss_index import EXACT_LIMIT, FaissIndex, choose_factory, pq_subquantizers
from index.vector_store import VectorStore


def _unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_search_equals_numpy():
    data, queries = _unit_vectors(300), _unit_vectors(7, seed=1)
    index = FaissIndex.build(data)
    assert index.factory == "Flat" and index.ntotal == 300
    scores, ids = index.search(queries, 5)
    expected = np.argsort(-(queries @ data.T), axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ data.T, expected, axis=1), atol=1e-5)


def test_factory_is_chosen_by_size():
    assert choose_factory(1000, 384) == "Flat"
    assert choose_factory(EXACT_LIMIT, 384).startswith("IVF") and choose_factory(EXACT_LIMIT, 384).endswith(
        ",Flat"
    )
    assert choose_factory(10_000_000, 384).endswith("PQ48")


@pytest.mark.parametrize("factory", ["IVF8,Flat", "HNSW16,Flat"])
def test_approximate_factories_find_exact_neighbours(factory):
    data = _unit_vectors(2000)
    index = FaissIndex.build(data, factory)
    _, ids = index.search(data[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95


def test_fewer_results_than_k_are_padded():
    index = FaissIndex.build(_unit_vectors(3))
    scores, ids = index.search(_unit_vectors(2, seed=3), 5)
    assert ids.shape == (2, 5) and (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(ids[0, :3].tolist()) == [0, 1, 2]


def test_errors_are_clear():
    with pytest.raises(ValueError, match="invalid faiss factory"):
        FaissIndex.build(_unit_vectors(10), "NoSuchIndex")
    with pytest.raises(ValueError, match="at least 64 vectors"):
        FaissIndex.build(_unit_vectors(10), "IVF64,Flat")


def test_save_load_and_add(tmp_path):
    data = _unit_vectors(100)
    index = FaissIndex.build(data[:60])
    index.add(data[60:])
    index.save(tmp_path / "x.index")
    loaded = FaissIndex.load(tmp_path / "x.index", "Flat")
    np.testing.assert_array_equal(loaded.search(data[90:], 1)[1][:, 0], np.arange(90, 100))


@pytest.mark.gpu
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_gpu_search_equals_cpu_search(factory):
    """One code path: the CPU-built index copied with index_cpu_to_all_gpus gives the same results."""
    data, queries = _unit_vectors(5000, dim=384), _unit_vectors(64, dim=384, seed=2)
    cpu = FaissIndex.build(data, factory, gpu=False)
    # The same trained index moved to the GPU (GPU k-means would pick other IVF centroids).
    gpu = FaissIndex(faiss.clone_index(cpu.index), factory, gpu=True)
    assert gpu.on_gpu and not cpu.on_gpu
    cpu_scores, cpu_ids = cpu.search(queries, 10)
    gpu_scores, gpu_ids = gpu.search(queries, 10)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-4)
    assert (gpu_ids[:, 0] == cpu_ids[:, 0]).mean() >= 0.98


@pytest.mark.gpu
def test_gpu_build_trains_and_searches_on_gpu():
    data = _unit_vectors(5000, dim=384)
    index = FaissIndex.build(data, "IVF16,Flat")  # automatic: on the GPU when faiss sees one
    assert index.on_gpu
    _, ids = index.search(data[:100], 1)
    assert (ids[:, 0] == np.arange(100)).mean() >= 0.95


def test_pq_code_size_follows_the_dimension():
    assert choose_factory(10_000_000, 768).endswith(",PQ96")
    for dim in (32, 100, 384, 768, 1000):
        m = pq_subquantizers(dim)
        assert dim % m == 0 and 1 <= m <= max(1, dim // 8)
        faiss.index_factory(dim, f"IVF16,PQ{m}")  # faiss accepts it


def test_index_kind_is_read_from_the_index_not_the_factory_string():
    data = _unit_vectors(500)
    ivf = FaissIndex.build(data, "IVF8,Flat")
    relabelled = FaissIndex(faiss.clone_index(ivf.index), "a label, not a factory", nprobe=8)
    assert faiss.extract_index_ivf(relabelled.index).nprobe == 8  # nprobe set: it is an IVF index
    assert isinstance(relabelled, VectorStore) and relabelled.concurrent_search
