"""Removing documents: never retrieved again (dense, BM25, hybrid, training neighbours), persisted
across a reopen, crash-safe, re-addable under the same id; and `retro index remove`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from index.build import build_index
from index.corpus import Document
from index.lexical import LexicalIndex
from index.neighbours import TrainingChunks, precompute_neighbours
from index.retriever import Retriever
from index.store import IndexStore
from service.cli import app

CHUNK = 16
MARS = ["How many moons does Mars have? Phobos and Deimos orbit the fourth planet."]


@pytest.fixture()
def index_dir(tmp_path, topic_documents, tokenizer, hashing_encoder):
    # Three near-copies of the Mars document: removing them all makes the search reach past them.
    documents = topic_documents + [
        Document(f"copy/mars-{i}", topic_documents[1].text + f" Copy {i}.", "test") for i in range(3)
    ]
    build_index(documents, tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK)
    return tmp_path / "ix"


@pytest.fixture()
def store(index_dir, tokenizer, hashing_encoder) -> IndexStore:
    return IndexStore.open(index_dir, tokenizer, hashing_encoder)


MARS_IDS = ["space/mars", "copy/mars-0", "copy/mars-1", "copy/mars-2"]


def test_removed_documents_are_never_retrieved_and_stay_removed_after_reopen(
    store, index_dir, tokenizer, hashing_encoder
):
    assert set(Retriever(store).search(MARS, k=4)[0].doc_ids) == set(MARS_IDS)
    n_chunks, n_live = store.n_chunks, store.n_live_chunks
    report = store.remove_documents(MARS_IDS)
    assert report.outcomes == ["removed"] * 4 and report.n_documents == 4
    assert store.n_live_chunks == n_live - report.n_chunks and store.n_chunks == n_chunks
    assert store.n_live_documents == 13 - 4 and not store.has_document("space/mars")

    for opened in (store, IndexStore.open(index_dir, tokenizer, hashing_encoder)):
        assert not opened.has_document("copy/mars-1") and opened.n_live_documents == 9
        for mode in ("dense", "hybrid"):
            found = Retriever(opened, mode=mode).search(MARS, k=3)[0]
            assert not set(found.doc_ids) & set(MARS_IDS), mode
            assert (found.chunk_ids >= 0).all(), mode  # k results still come back
        # Asking for every live chunk gets every live chunk: the search reaches past the removed.
        everything = Retriever(opened).search(MARS, k=opened.n_live_chunks)[0]
        assert (everything.chunk_ids >= 0).all()
        assert not set(everything.chunk_ids.tolist()) & set(opened.removed_chunk_ids().tolist())


def test_removal_and_exclusion_together_still_fill_k(store):
    store.remove_documents(["copy/mars-0", "copy/mars-1"])
    found = Retriever(store).search(MARS, k=store.n_live_chunks - 3, exclude_doc_ids=[{"space/mars"}])[0]
    assert (found.chunk_ids >= 0).all()
    assert not {"space/mars", "copy/mars-0", "copy/mars-1"} & set(found.doc_ids)
    assert "copy/mars-2" in found.doc_ids


def test_outcomes_report_unknown_and_already_removed_ids(store, index_dir, tokenizer, hashing_encoder):
    report = store.remove_documents(["geo/nile", "no/such", "geo/nile"])
    assert report.outcomes == ["removed", "not_found", "already_removed"]
    assert report.n_documents == 1 and report.n_chunks == store.document(5)["n_chunks"]
    reopened = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert reopened.remove_documents(["geo/nile", "no/such"]).outcomes == ["already_removed", "not_found"]
    nothing = reopened.remove_documents([])
    assert nothing.outcomes == [] and nothing.n_documents == 0


def test_a_removed_id_can_be_added_again_as_a_new_document(store, index_dir, tokenizer, hashing_encoder):
    store.remove_documents(["art/monet"])
    report = store.add_documents([Document("art/monet", "Monet also painted haystacks at dawn and dusk.")])
    assert report.outcomes == [None] and store.has_document("art/monet")
    for opened in (store, IndexStore.open(index_dir, tokenizer, hashing_encoder)):
        for mode in ("dense", "hybrid"):
            found = Retriever(opened, mode=mode).search(["Monet water lilies garden Giverny haystacks"], k=4)[
                0
            ]
            monet = [t for d, t in zip(found.doc_ids, found.texts, strict=True) if d == "art/monet"]
            assert monet and all("lilies" not in t for t in monet), mode  # only the new text
    again = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert again.remove_documents(["art/monet"]).outcomes == ["removed"]  # the new one goes too
    assert not again.has_document("art/monet")


def test_tombstones_past_the_manifest_count_are_ignored(store, index_dir, tokenizer, hashing_encoder):
    # What a removal killed before its manifest update leaves: a tombstone line the manifest does not count.
    store.remove_documents(["geo/nile"])
    with open(store.version_dir / "removed.jsonl", "a") as f:
        f.write(json.dumps({"doc_id": "food/bread", "doc_index": 2, "n_chunks": 3, "time": 0}) + "\n")
        f.write('{"doc_id": "half')
    reopened = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert reopened.has_document("food/bread") and not reopened.has_document("geo/nile")
    reopened.remove_documents(["sport/chess"])
    lines = (store.version_dir / "removed.jsonl").read_text().splitlines()
    assert [json.loads(line)["doc_id"] for line in lines] == ["geo/nile", "sport/chess"]
    final = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert final.has_document("food/bread") and final.n_removed_documents == 2


def test_a_writer_opened_before_a_removal_must_reopen(index_dir, tokenizer, hashing_encoder):
    first = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    second = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    first.remove_documents(["geo/nile"])
    # Its manifest would drop the removal: refused, not lost.
    with pytest.raises(ValueError, match="reopen the index"):
        second.add_documents([Document("b/1", "Glaciers carve valleys over thousands of years.")])
    with pytest.raises(ValueError, match="reopen the index"):
        second.remove_documents(["food/bread"])
    again = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    again.add_documents([Document("b/1", "Glaciers carve valleys over thousands of years.")])
    final = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert not final.has_document("geo/nile") and final.has_document("b/1")


def test_bm25_after_a_removal_scores_as_if_the_text_was_never_added():
    texts = ["the otter floats", "otter stones shellfish", "the nile flows north", "north otter coast"]
    removed = LexicalIndex(texts)
    removed.remove([1])
    fresh = LexicalIndex([t for i, t in enumerate(texts) if i != 1])
    for query in ("otter", "north otter", "shellfish"):
        ids, scores = removed.search(query, 4)
        fresh_ids, fresh_scores = fresh.search(query, 4)
        assert 1 not in ids.tolist()
        np.testing.assert_array_equal(ids, [(i if i < 1 else i + 1) for i in fresh_ids.tolist()])
        np.testing.assert_allclose(scores, fresh_scores, rtol=1e-6)
    removed.add(["shellfish again"])  # the next id after every text, removed ones included
    assert removed.search("shellfish", 4)[0].tolist() == [4]


def test_training_neighbours_skip_removed_documents(store, index_dir):
    store.remove_documents(MARS_IDS[1:])
    precompute_neighbours(index_dir, k=2)
    chunks = TrainingChunks(index_dir, k=2)
    table = np.asarray(chunks.neighbours)
    assert (table >= 0).all()  # still two neighbours for every chunk
    assert not set(table.ravel().tolist()) & set(store.removed_chunk_ids().tolist())


runner = CliRunner()


def test_cli_remove_prints_outcomes_and_exit_codes(index_dir, tokenizer, hashing_encoder, tmp_path):
    removed = runner.invoke(app, ["index", "remove", str(index_dir), "geo/nile", "food/bread"])
    assert removed.exit_code == 0, removed.output
    assert "removed: geo/nile" in removed.stdout and "removed: food/bread" in removed.stdout
    assert "removed 2 documents" in removed.stdout and "now holds 11 documents" in removed.stdout
    store = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert not store.has_document("geo/nile") and not store.has_document("food/bread")

    mixed = runner.invoke(app, ["index", "remove", str(index_dir), "geo/nile", "no/such", "tech/rust"])
    assert mixed.exit_code == 1, mixed.output  # an unknown id; the known one is still removed
    assert "already removed: geo/nile" in mixed.stdout and "not found: no/such" in mixed.stdout
    assert not IndexStore.open(index_dir, tokenizer, hashing_encoder).has_document("tech/rust")

    info = runner.invoke(app, ["index", "info", str(index_dir)])
    assert info.exit_code == 0 and "removed documents" in info.stdout

    missing = runner.invoke(app, ["index", "remove", str(tmp_path / "nowhere"), "geo/nile"])
    assert missing.exit_code == 2
    assert "is not an index" in " ".join(missing.output.split()) and len(missing.output.splitlines()) <= 2
