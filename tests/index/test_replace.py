"""Replacing a document (`IndexStore.add_documents(replace=True)`, `retro index add --replace`,
`POST /v1/documents` with `replace`): the new text takes the old one's place in one commit, so a
search, a reopen and a crash see the old text or the new, never both and never neither."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import index.store as store_module
from index.build import build_index
from index.corpus import Document
from index.retriever import Retriever
from index.store import IndexStore
from service.cli import app

CHUNK = 16
QUERY = ["Monet water lilies garden Giverny haystacks"]
NEW = Document("art/monet", "Monet also painted haystacks at dawn and dusk, in series.", "test")


@pytest.fixture()
def index_dir(tmp_path, topic_documents, tokenizer, hashing_encoder):
    build_index(topic_documents, tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK)
    return tmp_path / "ix"


def monet_texts(store: IndexStore, mode: str) -> list[str]:
    found = Retriever(store, mode=mode).search(QUERY, k=6)[0]
    return [t for d, t in zip(found.doc_ids, found.texts, strict=True) if d == "art/monet"]


def old_text(texts: list[str]) -> bool:  # words of the fixture's Monet chunks (a chunk may cut one)
    return any("Claude" in t or "Giverny" in t for t in texts)


def new_text(texts: list[str]) -> bool:
    return any("also painted" in t or "dawn" in t for t in texts)


def test_a_replaced_document_is_found_with_its_new_text_only(index_dir, tokenizer, hashing_encoder):
    store = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    live, removed = store.n_live_documents, store.n_removed_documents
    assert old_text(monet_texts(store, "dense"))
    skipped = store.add_documents([NEW])  # without replace: skipped, as before
    assert skipped.outcomes == ["doc_id already in the index"] and not skipped.replaced
    report = store.add_documents([NEW, Document("new/doc", "Glaciers carve valleys.")], replace=True)
    assert report.outcomes == [None, None] and report.replaced == ["art/monet"]
    for opened in (store, IndexStore.open(index_dir, tokenizer, hashing_encoder)):
        assert opened.n_live_documents == live + 1 and opened.n_removed_documents == removed + 1
        for mode in ("dense", "hybrid"):
            texts = monet_texts(opened, mode)
            assert new_text(texts) and not old_text(texts), mode  # the new text, and only it
    again = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert again.remove_documents(["art/monet"]).outcomes == ["removed"]
    assert not again.has_document("art/monet") and not monet_texts(again, "dense")


def test_a_crash_before_the_commit_leaves_the_old_document(
    index_dir, tokenizer, hashing_encoder, monkeypatch
):
    """Killed after its rows and tombstone were written and before the manifest: the reopened index
    holds the old text, not both, and a later write overwrites what the crash left."""
    store = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    live = store.n_live_documents

    def crash(*args, **kwargs):
        raise OSError("killed before the manifest")

    monkeypatch.setattr(store_module, "write_atomic", crash)
    with pytest.raises(OSError, match="killed"):
        store.add_documents([NEW], replace=True)
    monkeypatch.undo()
    reopened = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert reopened.n_live_documents == live and reopened.n_removed_documents == 0
    for mode in ("dense", "hybrid"):
        texts = monet_texts(reopened, mode)
        assert old_text(texts) and not new_text(texts), mode
    assert reopened.add_documents([NEW], replace=True).replaced == ["art/monet"]
    final = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    assert final.n_live_documents == live and final.n_removed_documents == 1
    texts = monet_texts(final, "hybrid")
    assert new_text(texts) and not old_text(texts)


def test_cli_add_replace(index_dir, tokenizer, hashing_encoder, tmp_path, monkeypatch):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "art/monet", "text": "Monet also painted haystacks at dawn and dusk."}\n')
    monkeypatch.setattr(
        "service.cli.index._open_store",
        lambda *a, **k: IndexStore.open(index_dir, tokenizer, hashing_encoder),
    )
    plain = CliRunner().invoke(app, ["index", "add", str(index_dir), str(source)])
    assert plain.exit_code == 0 and "added 0 documents" in plain.output, plain.output
    replaced = CliRunner().invoke(app, ["index", "add", str(index_dir), str(source), "--replace"])
    assert replaced.exit_code == 0, replaced.output
    assert (
        "added 1 documents" in replaced.output
        and "1 of them in place of one with their id" in replaced.output
    )
