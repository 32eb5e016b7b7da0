"""The Milvus vector store against Milvus Lite (a local .db file, no server): the same results as
faiss Flat, live additions, removals that survive a reopen, a crash's leftover rows invisible and
truncated, a copy that never writes into its original's collection, a killed build that leaves the
old version serving and a rerun that resumes, and `retro index build --vector-store`.

Milvus Lite runs in-process; importing pymilvus is slow on a busy machine, so the tests are few and
share one .db file (collections are per version, so they do not meet)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import index.encoder
from index import milvus_store
from index.build import build_index
from index.corpus import Document
from index.faiss_index import FaissIndex
from index.layout import CURRENT_FILE, MANIFEST, MILVUS_OWNER
from index.milvus_store import MilvusStore
from index.neighbours import TrainingChunks, precompute_neighbours
from index.retriever import Retriever
from index.sources import read_sources
from index.store import IndexStore, copy_serving_version
from index.vector_store import VectorStore, parse_vector_store
from service.cli import app
from tests.index.hashing_encoder import HashingEncoder

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 16
MARS = ["How many moons does Mars have? Phobos and Deimos orbit the fourth planet."]
MARS_IDS = ["space/mars", "copy/mars-0", "copy/mars-1", "copy/mars-2"]


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> str:
    """One Milvus Lite file for the module: "milvus:<path>"."""
    return "milvus:" + str(tmp_path_factory.mktemp("milvus") / "lite.db")


def _unit_vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _documents(topic_documents) -> list[Document]:
    # Near-copies of the Mars document: removing them all makes a search reach past them.
    copies = [Document(f"copy/mars-{i}", topic_documents[1].text + f" Copy {i}.", "test") for i in range(3)]
    return topic_documents + copies


def test_search_equals_faiss_flat_and_grows_and_reopens(lite, tmp_path, monkeypatch):
    data, queries = _unit_vectors(300), _unit_vectors(7, seed=1)
    _, uri = parse_vector_store(lite)
    milvus, faiss_flat = MilvusStore.build(data[:250], uri), FaissIndex.build(data[:250], "Flat")
    assert isinstance(milvus, VectorStore) and milvus.ntotal == 250 and milvus.factory == "FLAT"
    for k in (1, 5, 40):
        scores, ids = milvus.search(queries, k)
        expected_scores, expected_ids = faiss_flat.search(queries, k)
        np.testing.assert_array_equal(ids, expected_ids)  # the same ids in the same order
        np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        assert scores.dtype == np.float32 and ids.dtype == np.int64

    milvus.add(data[250:])  # the next ids
    milvus.save(tmp_path / "milvus-300.json")
    assert (tmp_path / MILVUS_OWNER).read_text().strip() == milvus.collection
    reopened = MilvusStore.load(tmp_path / "milvus-300.json", 300)
    assert reopened.owned and reopened.ntotal == 300
    np.testing.assert_array_equal(reopened.search(data[260:270], 1)[1][:, 0], np.arange(260, 270))

    scores, ids = reopened.search(queries[:2], 305)  # more than it holds: padded
    assert (ids[:, 300:] == -1).all() and np.isneginf(scores[:, 300:]).all()
    assert sorted(ids[0, :300].tolist()) == list(range(300))
    monkeypatch.setattr(milvus_store, "MAX_TOPK", 8)  # Milvus' limit per query, made small
    scores, ids = reopened.search(queries[:2], 12)
    np.testing.assert_array_equal(ids[:, :8], FaissIndex.build(data).search(queries[:2], 8)[1])
    assert (ids[:, 8:] == -1).all() and np.isneginf(scores[:, 8:]).all()
    with pytest.raises(ValueError, match="holds 300 of the 301 vectors"):
        MilvusStore.load(tmp_path / "milvus-300.json", 301)


def test_store_on_milvus_searches_adds_removes_like_faiss(
    lite, tmp_path, topic_documents, tokenizer, hashing_encoder
):
    documents = _documents(topic_documents)
    report = build_index(
        documents, tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK, vector_store=lite
    )
    build_index(documents, tmp_path / "fx", tokenizer, hashing_encoder, chunk_size=CHUNK)
    manifest = json.loads((Path(report.version_dir) / MANIFEST).read_text())
    assert report.vector_store == manifest["vector_store"] == lite
    assert manifest["faiss_file"] == f"milvus-{report.n_chunks}.json" and manifest["faiss_factory"] == "FLAT"
    assert not list(Path(report.version_dir).glob("faiss-*"))
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    faiss_store = IndexStore.open(tmp_path / "fx", tokenizer, hashing_encoder)
    assert isinstance(store.vectors, MilvusStore) and store.vectors.ntotal == store.n_chunks

    # Queries whose first three scores differ (the hashing encoder ties often): one right order.
    queries = ["Rubicon Caesar civil war", "bread dough yeast ferments sugar"]
    queries.append("chess castling king rook rank")
    for found, expected in zip(
        Retriever(store).search(queries, k=3), Retriever(faiss_store).search(queries, k=3), strict=True
    ):
        assert (np.diff(expected.scores) < -1e-6).all(), expected.scores
        np.testing.assert_array_equal(found.chunk_ids, expected.chunk_ids)
        np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)

    added = store.add_documents([Document("new/penguins", "Penguins huddle together to keep warm.")])
    assert added.n_documents == 1
    assert Retriever(store).search(["penguins huddle warm"], k=1)[0].doc_ids == ["new/penguins"]
    assert store.remove_documents(MARS_IDS).outcomes == ["removed"] * 4

    for opened in (store, IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)):
        assert opened.has_document("new/penguins") and not opened.has_document("space/mars")
        assert Retriever(opened).search(["penguins huddle warm"], k=1)[0].doc_ids == ["new/penguins"]
        found = Retriever(opened).search(MARS, k=3)[0]
        assert not set(found.doc_ids) & set(MARS_IDS) and (found.chunk_ids >= 0).all()
        # Every live chunk, past the removed and the excluded: the deeper searches reach them all.
        live = opened.n_live_chunks - opened.document(0)["n_chunks"]
        deep = Retriever(opened).search(MARS, k=live, exclude_doc_ids=[{"animals/otter"}])[0]
        assert (deep.chunk_ids >= 0).all() and len(set(deep.chunk_ids.tolist())) == live
        assert not set(deep.chunk_ids.tolist()) & set(opened.removed_chunk_ids().tolist())
        assert not {"animals/otter", *MARS_IDS} & set(deep.doc_ids)

    # Training neighbours (`retro train` reads them) come from the same store.
    precompute_neighbours(tmp_path / "ix", k=2)
    chunks = TrainingChunks(tmp_path / "ix", k=2)
    table = np.asarray(chunks.neighbours)
    assert table.shape == (store.n_chunks, 2) and (table >= 0).all()
    assert not set(table.ravel().tolist()) & set(store.removed_chunk_ids().tolist())
    assert (chunks.doc_index[table] != np.asarray(chunks.doc_index)[:, None]).all()  # other documents


def test_a_crashed_additions_rows_are_invisible_then_truncated(lite, tmp_path, topic_documents, tokenizer):
    encoder = HashingEncoder()
    build_index(topic_documents, tmp_path / "ix", tokenizer, encoder, chunk_size=CHUNK, vector_store=lite)
    store = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    n = store.n_chunks
    # What an addition killed after its insert, before its manifest, leaves: rows past the count.
    stray = encoder.encode(["glaciers carve valleys"] * 3)
    store.vectors.add(stray)
    reopened = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    assert reopened.n_chunks == n and reopened.vectors.ntotal == n
    _, ids = reopened.vectors.search(stray[:1], n + 3)
    assert ids.max() == n - 1 and (ids[0, n:] == -1).all()  # never returned
    reopened.add_documents([Document("new/glaciers", "Glaciers carve valleys over thousands of years.")])
    collection = reopened.vectors.collection
    total = reopened.vectors._count("id >= 0")
    assert total == reopened.n_chunks, (total, reopened.n_chunks, collection)  # the leftovers are gone
    final = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    assert Retriever(final).search(["glaciers carve valleys"], k=1)[0].doc_ids == ["new/glaciers"]


def test_a_copy_adds_into_its_own_collection(lite, tmp_path, topic_documents, tokenizer):
    """`retro eval` adds its held-out documents to a copy of the serving version."""
    encoder = HashingEncoder()
    build_index(topic_documents, tmp_path / "ix", tokenizer, encoder, chunk_size=CHUNK, vector_store=lite)
    original = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    copy = IndexStore.open(copy_serving_version(tmp_path / "ix", tmp_path / "copy"), tokenizer, encoder)
    assert not copy.vectors.owned and copy.vectors.collection == original.vectors.collection
    copy.add_documents([Document("held/out", "Zorbland is a country. Its capital is Quibbletown.")])
    assert copy.vectors.owned and copy.vectors.collection != original.vectors.collection
    again = IndexStore.open(tmp_path / "copy", tokenizer, encoder)
    assert again.vectors.collection == copy.vectors.collection
    assert Retriever(again).search(["capital of Zorbland"], k=1)[0].doc_ids == ["held/out"]
    assert original.vectors._count("id >= 0") == original.n_chunks  # nothing written into it
    original.add_documents([Document("more/x", "Penguins huddle together to keep warm.")])
    assert Retriever(again).search(["capital of Zorbland"], k=1)[0].doc_ids == ["held/out"]


KILLED_BUILD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from index.build import build_index
    from index.sources import read_sources
    from retro.tokenizer import Tokenizer
    from tests.index.hashing_encoder import HashingEncoder

    corpus, out, tokenizer_path, store = sys.argv[1:]

    def progress(stage, done, total):
        # Killed once the collection is filled and its pointer saved, before the manifest and CURRENT.
        if stage == "index" and done > 0:
            os.kill(os.getpid(), signal.SIGKILL)

    build_index(list(read_sources([corpus], [])), out, Tokenizer.load(tokenizer_path), HashingEncoder(),
                chunk_size=16, shard_size=4, progress=progress, vector_store=store)
    """
)


def test_killed_build_keeps_old_version_and_rerun_resumes(tmp_path, topic_documents, tokenizer):
    lite = f"milvus:{tmp_path / 'own.db'}"  # its own file: the subprocess must be able to lock it
    out = tmp_path / "ix"
    build_index(topic_documents[:3], out, tokenizer, HashingEncoder(), chunk_size=CHUNK, shard_size=4,
                vector_store=lite)  # fmt: skip
    milvus_store.release(parse_vector_store(lite)[1])  # Milvus Lite: one process per file
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in topic_documents:
        (corpus / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    tokenizer.save(tmp_path / "tokenizer.json")
    script = tmp_path / "killed_build.py"
    script.write_text(KILLED_BUILD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.run(
        [sys.executable, str(script), str(corpus), str(out), str(tmp_path / "tokenizer.json"), lite],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]

    assert (out / CURRENT_FILE).read_text().strip() == "v0001"  # the old version still serves
    old = IndexStore.open(out, tokenizer, HashingEncoder())
    assert old.n_documents == 3 and isinstance(old.vectors, MilvusStore)
    assert Retriever(old).search(["sea otters"], k=1)[0].doc_ids == ["animals/otter"]
    shards_on_disk = list((out / "work").glob("*/embeddings-*.npy"))
    assert len(shards_on_disk) > 1

    encoder = HashingEncoder()
    report = build_index(list(read_sources([str(corpus)], [])), out, tokenizer, encoder, chunk_size=CHUNK,
                         shard_size=4)  # fmt: skip
    assert report.shards_reused == len(shards_on_disk) and encoder.texts_encoded == 0
    assert report.version == "v0002" and report.vector_store == lite  # a rebuild stays on Milvus
    new = IndexStore.open(out, tokenizer, encoder)
    assert new.n_documents == 10 and new.vectors.collection != old.vectors.collection
    assert Retriever(new).search(["violin strings bow"], k=1)[0].doc_ids == ["corpus/music_violin.txt"]
    assert Retriever(old).search(["sea otters"], k=1)[0].doc_ids == ["animals/otter"]  # v0001 untouched


runner = CliRunner()


def test_cli_builds_on_milvus_and_refuses_a_bad_uri(lite, tmp_path, topic_documents, monkeypatch):
    monkeypatch.setattr(index.encoder, "ChunkEncoder", lambda device="auto": HashingEncoder())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in topic_documents:
        (corpus / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    out = tmp_path / "ix"
    common = ["index", "build", str(corpus), "--out", str(out), "--vocab-size", "300", "--chunk-size", "16"]
    built = runner.invoke(app, [*common, "--vector-store", lite])
    assert built.exit_code == 0, built.output
    assert "built v0001: 10 documents" in built.stdout and "FLAT" in built.stdout
    info = runner.invoke(app, ["index", "info", str(out)])
    assert info.exit_code == 0 and "milvus:" in info.stdout
    found = runner.invoke(app, ["index", "search", str(out), "violin strings bow", "-k", "1", "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["neighbours"][0]["doc_id"] == "corpus/music_violin.txt"

    for spec, message in [
        ("chroma", "unknown vector store 'chroma'"),
        ("milvus:", "no Milvus URI given"),
        ("milvus:ftp://host", "invalid Milvus URI 'ftp://host'"),
        (f"milvus:{tmp_path / 'no' / 'such.db'}", "does not exist"),
        ("milvus:http://127.0.0.1:1", "cannot connect to Milvus at http://127.0.0.1:1"),
    ]:
        result = runner.invoke(app, [*common, "--vector-store", spec])
        assert result.exit_code == 2, (spec, result.output)
        assert message in " ".join(result.output.split()), (spec, result.output)
    assert (out / CURRENT_FILE).read_text().strip() == "v0001"  # nothing was built


def test_prune_drops_a_deleted_versions_collection_and_keeps_currents(
    lite, tmp_path, topic_documents, tokenizer
):
    from index.prune import prune_versions

    encoder = HashingEncoder()
    old = build_index(
        topic_documents, tmp_path / "ix", tokenizer, encoder, chunk_size=CHUNK, vector_store=lite
    )
    old_collection = IndexStore.open(tmp_path / "ix", tokenizer, encoder).vectors.collection
    build_index(topic_documents[:2], tmp_path / "ix", tokenizer, encoder, chunk_size=CHUNK, vector_store=lite)
    serving = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    client = milvus_store.connect(parse_vector_store(lite)[1])
    assert client.has_collection(old_collection) and serving.vectors.collection != old_collection

    assert prune_versions(tmp_path / "ix", keep=1) == [Path(old.version_dir).name]
    assert not client.has_collection(old_collection)  # gone from the server with its folder
    assert client.has_collection(serving.vectors.collection)
    assert Retriever(IndexStore.open(tmp_path / "ix", tokenizer, encoder)).search(["Mars"], k=1)[0].doc_ids
