"""Pruning old versions: the newest `keep` and CURRENT stay, busy versions and running builds are
spared, crashed builds' leftovers go, and `build_index(keep_versions=...)` prunes after the switch."""

from __future__ import annotations

import os
import time

import pytest

from index.build import build_index
from index.corpus import Document
from index.layout import BUILD_LOCK, CURRENT_FILE, STAGING_PREFIX
from index.locks import building, version_lock
from index.prune import prune_versions, version_names
from index.retriever import Retriever
from index.store import IndexStore

CHUNK = 16


def _build(out, documents, tokenizer, encoder, **kwargs):
    return build_index(documents, out, tokenizer, encoder, chunk_size=CHUNK, shard_size=64, **kwargs)


@pytest.fixture()
def five_versions(tmp_path, topic_documents, tokenizer, hashing_encoder):
    """An index with v0001..v0005; v000i holds the first i+1 documents; CURRENT is v0005."""
    out = tmp_path / "ix"
    for i in range(1, 6):
        _build(out, topic_documents[: i + 1], tokenizer, hashing_encoder)
    assert version_names(out) == ["v0001", "v0002", "v0003", "v0004", "v0005"]
    return out


def _current(out) -> str:
    return (out / CURRENT_FILE).read_text().strip()


def _age(path, seconds: float) -> None:
    """Sets the modification time of path and everything in it to `seconds` ago."""
    then = time.time() - seconds
    for entry in path.iterdir():
        os.utime(entry, (then, then))
    os.utime(path, (then, then))


def test_keeps_the_newest_and_returns_what_it_deleted(five_versions, tokenizer, hashing_encoder):
    assert prune_versions(five_versions, keep=2) == ["v0001", "v0002", "v0003"]
    assert version_names(five_versions) == ["v0004", "v0005"] and _current(five_versions) == "v0005"
    assert not any(p.name.startswith(".") for p in (five_versions / "versions").iterdir())
    assert IndexStore.open(five_versions, tokenizer, hashing_encoder).n_documents == 6
    assert prune_versions(five_versions, keep=2) == []  # nothing more to do
    assert prune_versions(five_versions, keep=1) == ["v0004"]
    assert version_names(five_versions) == ["v0005"]


def test_current_is_kept_even_when_it_is_the_oldest(five_versions, tokenizer, hashing_encoder):
    (five_versions / CURRENT_FILE).write_text("v0001\n")  # pointed back by hand
    assert prune_versions(five_versions, keep=3) == ["v0002", "v0003"]
    assert version_names(five_versions) == ["v0001", "v0004", "v0005"]
    assert prune_versions(five_versions, keep=1) == ["v0004", "v0005"]
    assert version_names(five_versions) == ["v0001"] and _current(five_versions) == "v0001"
    assert IndexStore.open(five_versions, tokenizer, hashing_encoder).n_documents == 2


def test_a_version_whose_write_lock_is_held_is_skipped(five_versions):
    with version_lock(five_versions / "versions" / "v0002"):  # what add_documents holds
        assert prune_versions(five_versions, keep=2) == ["v0001", "v0003"]
        assert version_names(five_versions) == ["v0002", "v0004", "v0005"]
    assert prune_versions(five_versions, keep=2) == ["v0002"]  # free again
    assert version_names(five_versions) == ["v0004", "v0005"]


def test_a_store_on_a_pruned_version_keeps_searching_and_refuses_to_add(
    five_versions, tokenizer, hashing_encoder
):
    old = IndexStore.open(five_versions / "versions" / "v0001", tokenizer, hashing_encoder)
    assert prune_versions(five_versions, keep=1) == ["v0001", "v0002", "v0003", "v0004"]
    assert not (five_versions / "versions" / "v0001").exists()
    # memmapped files stay readable after the unlink, the faiss index is in memory
    assert Retriever(old).search(["sea otters crack shellfish"], k=1)[0].doc_ids == ["animals/otter"]
    with pytest.raises(FileNotFoundError):
        old.add_documents([Document("late/1", "Penguins huddle together to keep warm.")])
    assert version_names(five_versions) == ["v0005"]


def test_while_a_build_assembles_versions_newer_than_current_are_kept(five_versions):
    (five_versions / CURRENT_FILE).write_text("v0003\n")
    with building(five_versions):  # as if a build had just renamed v0004/v0005 into place
        assert prune_versions(five_versions, keep=1) == ["v0001", "v0002"]
        assert version_names(five_versions) == ["v0003", "v0004", "v0005"]
    assert prune_versions(five_versions, keep=1) == ["v0004", "v0005"]


def test_crashed_builds_leftovers_are_removed_but_not_a_running_build(five_versions):
    versions = five_versions / "versions"
    crashed, fresh = versions / f"{STAGING_PREFIX}crashed", versions / f"{STAGING_PREFIX}fresh"
    half_deleted = versions / ".deleting-v0000-1-abc"  # a prune killed midway
    for folder in (crashed, fresh, half_deleted):
        folder.mkdir()
        (folder / "chunks.i32").write_bytes(b"\0" * 64)
    _age(crashed, 2 * 3600)
    with building(five_versions):  # a build holds the lock: its staging folder may be this one
        prune_versions(five_versions, keep=5)
        assert crashed.is_dir() and fresh.is_dir() and not half_deleted.exists()
    assert prune_versions(five_versions, keep=5) == []
    assert not crashed.exists() and fresh.is_dir()  # the fresh one may be a build of older code
    assert version_names(five_versions) == ["v0001", "v0002", "v0003", "v0004", "v0005"]


def test_bad_arguments_are_clear_errors(tmp_path, five_versions):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune_versions(five_versions, keep=0)
    with pytest.raises(ValueError, match="is not an index folder"):
        prune_versions(tmp_path / "missing", keep=1)
    with pytest.raises(ValueError, match="is not an index folder"):
        prune_versions(five_versions / "versions" / "v0001", keep=1)  # a version, not the index
    (five_versions / CURRENT_FILE).write_text("v0009\n")
    with pytest.raises(ValueError, match="has no manifest.json"):
        prune_versions(five_versions, keep=1)
    assert len(version_names(five_versions)) == 5


def test_build_with_keep_versions_prunes_after_the_switch(
    tmp_path, topic_documents, tokenizer, hashing_encoder
):
    out = tmp_path / "ix"
    reports = [
        _build(out, topic_documents[: i + 2], tokenizer, hashing_encoder, keep_versions=2) for i in range(3)
    ]
    assert [r.pruned for r in reports] == [[], [], ["v0001"]]
    assert version_names(out) == ["v0002", "v0003"] and _current(out) == "v0003"
    assert _build(out, topic_documents, tokenizer, hashing_encoder).pruned == []  # None keeps all
    assert version_names(out) == ["v0002", "v0003", "v0004"]
    with pytest.raises(ValueError, match="keep_versions must be >= 1"):
        _build(out, topic_documents, tokenizer, hashing_encoder, keep_versions=0)
    assert version_names(out) == ["v0002", "v0003", "v0004"]  # refused before building anything


def test_a_running_build_is_not_disturbed_by_a_prune(tmp_path, topic_documents, tokenizer, hashing_encoder):
    out = tmp_path / "ix"
    _build(out, topic_documents[:2], tokenizer, hashing_encoder)
    during: list[list[str]] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "index" and done == 0:  # the staging folder is being assembled
            (staging,) = (out / "versions").glob(f"{STAGING_PREFIX}*")
            _age(staging, 2 * 3600)  # even an old-looking one is spared while the build holds the lock
            during.append(prune_versions(out, keep=1))
            assert staging.is_dir()

    report = _build(out, topic_documents, tokenizer, hashing_encoder, progress=progress)
    assert during == [[]] and report.version == "v0002" and _current(out) == "v0002"
    assert IndexStore.open(out, tokenizer, hashing_encoder).n_documents == 10
    assert (out / BUILD_LOCK).is_file() and version_names(out) == ["v0001", "v0002"]
