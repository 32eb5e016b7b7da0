"""Build -> versioned store -> search; live additions; exclusion; crash safety and resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from index.build import build_index
from index.corpus import Document
from index.layout import CURRENT_FILE
from index.retriever import Retriever
from index.sources import read_sources
from index.store import IndexStore
from retro.tokenizer import Tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK = 16


def _build(out, documents, tokenizer, encoder, shard_size=64, **kwargs):
    return build_index(documents, out, tokenizer, encoder, chunk_size=CHUNK, shard_size=shard_size, **kwargs)


def test_build_then_search_finds_the_right_document(tmp_path, topic_documents, tokenizer, encoder):
    report = _build(tmp_path / "ix", topic_documents, tokenizer, encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    retriever = Retriever(store)
    queries = {
        "How many moons does Mars have?": "space/mars",
        "Which river flows into the Mediterranean?": "geo/nile",
        "Why does bread dough rise?": "food/bread",
        "Who painted water lilies?": "art/monet",
    }
    results = retriever.search(list(queries), k=3)
    assert [r.doc_ids[0] for r in results] == list(queries.values())
    first = results[0]
    assert first.tokens.dtype == np.int64 and first.tokens.shape == (3, 2 * CHUNK)
    assert first.scores.dtype == np.float32 and np.all(np.diff(first.scores) <= 1e-6)
    assert first.chunk_ids.dtype == np.int64 and first.chunk_ids.shape == (3,)
    top = int(first.chunk_ids[0])
    np.testing.assert_array_equal(first.tokens[0, :CHUNK], store.chunk_tokens([top])[0])
    assert first.texts[0] == tokenizer.decode(store.chunk_tokens([top])[0])
    assert report.n_documents == 10 and report.n_chunks == store.n_chunks > 10


def test_continuation_is_the_next_chunk_of_the_same_document(
    tmp_path, topic_documents, tokenizer, hashing_encoder
):
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    mars = [i for i in range(store.n_chunks) if store._snapshot.doc_index[i] == 1]
    assert len(mars) >= 2
    both = store.chunks_with_continuations(np.array([mars[0], mars[-1], -1]))
    np.testing.assert_array_equal(both[0, CHUNK:], store.chunk_tokens([mars[1]])[0])
    assert (both[1, CHUNK:] == tokenizer.pad_id).all()  # last chunk of its document
    assert (both[2] == tokenizer.pad_id).all()


def test_a_wider_window_shows_the_chunks_after_the_continuation_up_to_the_documents_end(
    tmp_path, topic_documents, tokenizer, hashing_encoder
):
    """Neighbours longer than RETRO's chunk + continuation (a model with a longer `retrieved_len`)
    show the next chunks of the same document, and padding past its end, never another document."""
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    mars = [i for i in range(store.n_chunks) if store._snapshot.doc_index[i] == 1]
    window = len(mars) + 1  # one chunk past the document's end (the next document's first chunk)
    wide = store.chunks_with_continuations(np.array([mars[0], -1]), window=window)
    assert wide.shape == (2, window * CHUNK)
    for j, chunk in enumerate(mars):
        np.testing.assert_array_equal(wide[0, j * CHUNK : (j + 1) * CHUNK], store.chunk_tokens([chunk])[0])
    assert (wide[0, len(mars) * CHUNK :] == tokenizer.pad_id).all()
    assert (wide[1] == tokenizer.pad_id).all()
    # the default window is RETRO's chunk + continuation, a prefix of any wider one
    default = store.chunks_with_continuations(np.array([mars[0]]))[0]
    np.testing.assert_array_equal(default, wide[0, : 2 * CHUNK])
    with pytest.raises(ValueError, match="at least its own chunk"):
        store.chunks_with_continuations(np.array([mars[0]]), window=0)


def test_manifest_tokenizer_copy_and_versions(tmp_path, topic_documents, tokenizer, hashing_encoder):
    out = tmp_path / "ix"
    first = _build(out, topic_documents, tokenizer, hashing_encoder, sources=["test"])
    manifest = json.loads((Path(first.version_dir) / "manifest.json").read_text())
    assert manifest["n_documents"] == 10 and manifest["n_chunks"] == first.n_chunks
    assert manifest["tokenizer_fingerprint"] == tokenizer.fingerprint
    assert manifest["encoder"] == hashing_encoder.name and manifest["chunk_size"] == CHUNK
    assert manifest["faiss_factory"] == "Flat" and len(manifest["corpus_fingerprint"]) == 64
    assert manifest["build_seconds"] > 0 and manifest["skipped"] == []
    assert Tokenizer.load(first.version_dir).fingerprint == tokenizer.fingerprint
    assert (out / CURRENT_FILE).read_text().strip() == "v0001"

    second = _build(out, topic_documents[:5], tokenizer, hashing_encoder)
    assert second.version == "v0002" and (out / CURRENT_FILE).read_text().strip() == "v0002"
    assert IndexStore.open(out, tokenizer).n_documents == 5
    assert IndexStore.open(first.version_dir, tokenizer).n_documents == 10  # old version intact
    assert not (out / "work").exists()


def test_bad_files_are_reported_not_fatal(tmp_path, tokenizer, hashing_encoder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("Sea otters crack shellfish with stones.")
    (corpus / "bin.txt").write_bytes(b"\x00\x01\x02\x03")
    (corpus / "bad.txt").write_bytes(b"caf\xe9")
    (corpus / "empty.txt").write_text("")
    skipped: list = []
    documents = list(read_sources([str(corpus)], skipped))
    report = _build(tmp_path / "ix", documents, tokenizer, hashing_encoder, skipped=skipped)
    assert report.n_documents == 1
    manifest = json.loads((Path(report.version_dir) / "manifest.json").read_text())
    reasons = sorted((Path(s["where"]).name, s["reason"].split(" at ")[0]) for s in manifest["skipped"])
    assert reasons == [("bad.txt", "invalid UTF-8"), ("bin.txt", "binary"), ("empty.txt", "empty")]


def test_empty_corpus_is_a_clear_error(tmp_path, tokenizer, hashing_encoder):
    with pytest.raises(ValueError, match="no readable documents"):
        _build(tmp_path / "ix", [], tokenizer, hashing_encoder)


def test_add_documents_found_without_rebuild_and_after_reopen(tmp_path, topic_documents, tokenizer, encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    before = store.n_chunks
    new = Document("geo/zorbland", "Zorbland is a country. Its capital is Quibbletown.", "added")
    report = store.add_documents([new, Document("space/mars", "duplicate id", "added")])
    assert report.n_documents == 1 and report.n_chunks >= 1
    assert [s.reason for s in report.skipped] == ["doc_id already in the index"]
    assert store.n_chunks == before + report.n_chunks
    query = ["What is the capital of Zorbland?"]
    assert Retriever(store).search(query, k=1)[0].doc_ids == ["geo/zorbland"]

    reopened = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    assert reopened.n_chunks == store.n_chunks and reopened.version == "v0001"
    found = Retriever(reopened).search(query, k=1)[0]
    assert found.doc_ids == ["geo/zorbland"] and "Quibbletown" in found.texts[0] + tokenizer.decode(
        found.tokens[0]
    )
    assert reopened.manifest["additions"][0]["n_documents"] == 1


def test_crash_leftovers_past_the_manifest_are_ignored(tmp_path, topic_documents, tokenizer, hashing_encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    n_chunks = store.n_chunks
    # What an append killed before its manifest update leaves behind: longer data files.
    with open(store.version_dir / "chunks.i32", "ab") as f:
        f.write(b"\x07" * 100)
    with open(store.version_dir / "documents.jsonl", "a") as f:
        f.write('{"doc_id": "half-writ')
    reopened = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    assert reopened.n_chunks == n_chunks and reopened.n_documents == 10
    reopened.add_documents([Document("new/doc", "Penguins huddle together to keep warm in Antarctica.")])
    again = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    assert again.n_documents == 11
    assert Retriever(again).search(["penguins huddle warm"], k=1)[0].doc_ids == ["new/doc"]
    assert (again.version_dir / "chunks.i32").stat().st_size == again.n_chunks * CHUNK * 4


def test_exclusion_and_padding(tmp_path, topic_documents, tokenizer, encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, encoder)
    retriever = Retriever(store)
    query = ["How many moons does Mars have?"]
    excluded = retriever.search(query, k=3, exclude_doc_ids=[{"space/mars", "not/in/index"}])[0]
    assert "space/mars" not in excluded.doc_ids and (excluded.chunk_ids >= 0).all()

    everything = retriever.search(query, k=store.n_chunks + 3)[0]
    assert (everything.chunk_ids[-3:] == -1).all() and np.isneginf(everything.scores[-3:]).all()
    assert (everything.tokens[-3:] == tokenizer.pad_id).all() and everything.doc_ids[-1] == ""
    assert sorted(everything.chunk_ids[:-3].tolist()) == list(range(store.n_chunks))
    all_but_mars = retriever.search(query, k=store.n_chunks, exclude_doc_ids=[{"space/mars"}])[0]
    mars_chunks = store.document(1)["n_chunks"]
    assert (all_but_mars.chunk_ids >= 0).sum() == store.n_chunks - mars_chunks
    with pytest.raises(ValueError, match="exclude_doc_ids has 2 entries for 1 queries"):
        retriever.search(query, k=1, exclude_doc_ids=[set(), set()])


def test_search_tokens_decodes_then_searches(tmp_path, topic_documents, tokenizer, encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, encoder)
    retriever = Retriever(IndexStore.open(tmp_path / "ix", tokenizer, encoder))
    ids = tokenizer.encode("castling moves the king towards a rook")[:CHUNK]
    chunk = np.full((1, CHUNK), tokenizer.pad_id, dtype=np.int64)
    chunk[0, -len(ids) :] = ids  # left padding, as the generation loop aligns prompts
    assert retriever.search_tokens(chunk, k=1)[0].doc_ids == ["sport/chess"]
    with pytest.raises(ValueError, match=r"\[n, chunk_size\]"):
        retriever.search_tokens(chunk[0], k=1)


def test_tokenizer_mismatch_is_refused(tmp_path, topic_documents, tokenizer, hashing_encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    other = Tokenizer.train(["completely different text"] * 5, vocab_size=300)
    with pytest.raises(ValueError, match="tokenizer mismatch"):
        IndexStore.open(tmp_path / "ix", other)
    with pytest.raises(ValueError, match="is not an index"):
        IndexStore.open(tmp_path, tokenizer)


def test_concurrent_searches_and_additions(tmp_path, topic_documents, tokenizer, hashing_encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    retriever = Retriever(store)
    errors: list[BaseException] = []
    done = threading.Event()

    def search_forever() -> None:
        try:
            while not done.is_set():
                for found in retriever.search(["otters crack shellfish", "violin strings"], k=4):
                    valid = found.chunk_ids >= 0
                    assert valid.all() and (found.tokens[valid, 0] != tokenizer.pad_id).all()
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    searchers = [threading.Thread(target=search_forever) for _ in range(2)]
    for thread in searchers:
        thread.start()
    for i in range(8):
        store.add_documents([Document(f"extra/{i}", f"Extra document number {i} about glaciers{i} melting.")])
    done.set()
    for thread in searchers:
        thread.join()
    assert not errors
    assert retriever.search(["glaciers5 melting"], k=1)[0].doc_ids == ["extra/5"]


KILLED_BUILD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from index.build import build_index
    from index.sources import read_sources
    from retro.tokenizer import Tokenizer
    from tests.index.hashing_encoder import HashingEncoder

    corpus, out, tokenizer_path, kill_stage = sys.argv[1:]

    def progress(stage, done, total):
        # Killed right after the first embedding shard is on disk, or after all shards.
        if stage == kill_stage and done > 0:
            os.kill(os.getpid(), signal.SIGKILL)

    build_index(list(read_sources([corpus], [])), out, Tokenizer.load(tokenizer_path), HashingEncoder(),
                chunk_size=16, shard_size=4, progress=progress)
    """
)


@pytest.mark.parametrize("kill_stage", ["embed", "index"])
def test_killed_build_keeps_old_version_and_rerun_resumes(tmp_path, topic_documents, tokenizer, kill_stage):
    from tests.index.hashing_encoder import HashingEncoder

    out = tmp_path / "ix"
    _build(out, topic_documents[:3], tokenizer, HashingEncoder(), shard_size=4)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in topic_documents:
        (corpus / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    tokenizer.save(tmp_path / "tokenizer.json")
    script = tmp_path / "killed_build.py"
    script.write_text(KILLED_BUILD_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.run(
        [sys.executable, str(script), str(corpus), str(out), str(tmp_path / "tokenizer.json"), kill_stage],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr

    # The old version still serves.
    assert (out / CURRENT_FILE).read_text().strip() == "v0001"
    old = IndexStore.open(out, tokenizer, HashingEncoder())
    assert old.n_documents == 3
    assert Retriever(old).search(["sea otters"], k=1)[0].doc_ids == ["animals/otter"]
    shards_on_disk = list((out / "work").glob("*/embeddings-*.npy"))
    assert len(shards_on_disk) == 1 if kill_stage == "embed" else len(shards_on_disk) > 1

    # The rerun reuses the finished shards and completes.
    encoder = HashingEncoder()
    documents = list(read_sources([str(corpus)], []))
    report = _build(out, documents, tokenizer, encoder, shard_size=4)
    assert report.shards_reused == len(shards_on_disk)
    assert encoder.texts_encoded == report.n_chunks - 4 * report.shards_reused
    assert report.version == "v0002" and (out / CURRENT_FILE).read_text().strip() == "v0002"
    new = IndexStore.open(out, tokenizer, encoder)
    assert new.n_documents == 10
    assert Retriever(new).search(["violin strings bow"], k=1)[0].doc_ids == ["corpus/music_violin.txt"]
    assert not any(p.name.startswith(".building") for p in (out / "versions").iterdir())


@pytest.mark.parametrize("factory", ["IVF4,Flat", "HNSW8,Flat"])
def test_approximate_factory_store_grows_and_reopens(
    tmp_path, topic_documents, tokenizer, hashing_encoder, factory
):
    report = _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder, factory=factory)
    assert report.faiss_factory == factory
    store = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    store.add_documents([Document("new/penguins", "Penguins huddle together to keep warm in Antarctica.")])
    reopened = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    assert reopened.manifest["faiss_factory"] == factory and reopened.vectors.ntotal == reopened.n_chunks
    found = Retriever(reopened).search(["penguins huddle warm Antarctica", "violin strings bow"], k=1)
    assert [f.doc_ids[0] for f in found] == ["new/penguins", "music/violin"]


def test_shard_stream_cuts_the_same_shards_for_any_document_batching(tmp_path, topic_documents, tokenizer):
    from index.build import _shard_stream
    from index.chunker import chunk_token_lists, decode_chunks, tokenize_texts

    whole = chunk_token_lists(tokenize_texts(tokenizer, [d.text for d in topic_documents]), CHUNK, 0)
    expected = decode_chunks(tokenizer, whole.tokens, 0)
    for docs_per_batch in (1, 3, 100):
        pieces: list = []
        stream = list(_shard_stream(topic_documents, tokenizer, CHUNK, 5, tmp_path, pieces, docs_per_batch))
        assert [shard for shard, *_ in stream] == list(range(-(-len(whole) // 5)))
        assert [t for _, texts, _, _ in stream for t in texts] == expected
        assert stream[-1][2:] == (len(topic_documents), len(whole))
        np.testing.assert_array_equal(np.concatenate([p.doc_index for p in pieces]), whole.doc_index)


def test_a_second_writer_must_reopen_first(tmp_path, topic_documents, tokenizer, hashing_encoder):
    _build(tmp_path / "ix", topic_documents, tokenizer, hashing_encoder)
    first = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    second = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    first.add_documents([Document("a/1", "Penguins huddle together to keep warm.")])
    with pytest.raises(ValueError, match="extended by another process"):
        second.add_documents([Document("b/1", "Glaciers carve valleys over thousands of years.")])
    again = IndexStore.open(tmp_path / "ix", tokenizer, hashing_encoder)
    again.add_documents([Document("b/1", "Glaciers carve valleys over thousands of years.")])
    assert IndexStore.open(tmp_path / "ix", tokenizer).n_documents == 12
