"""`retro index build/add/search/info/prune` through Typer's CliRunner: results, exit codes, messages."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

import index.encoder
from index.build import build_index
from index.prune import version_names
from retro.tokenizer import Tokenizer
from service.cli import app

runner = CliRunner()


@pytest.fixture()
def corpus(tmp_path, topic_documents):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for d in topic_documents:
        (folder / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    (folder / "junk.txt").write_bytes(b"\x00\xff binary")
    return folder


@pytest.fixture(autouse=True)
def shared_encoder(monkeypatch, encoder):
    """The CLI makes its own ChunkEncoder; hand it the session's (the model loads once)."""
    monkeypatch.setattr(index.encoder, "ChunkEncoder", lambda device="auto": encoder)


def _run(*args: str):
    return runner.invoke(app, ["index", *args])


def _error_line(result) -> str:
    return " ".join(result.output.split())


def test_build_search_add_info(tmp_path, corpus):
    out = tmp_path / "ix"
    built = _run("build", str(corpus), "--out", str(out), "--vocab-size", "300", "--chunk-size", "16")
    assert built.exit_code == 0, built.output
    assert "built v0001: 10 documents" in built.stdout and "binary" in built.output
    assert Tokenizer.load(out / "versions" / "v0001").vocab_size <= 300

    found = _run("search", str(out), "How many moons does Mars have?", "-k", "2", "--json")
    assert found.exit_code == 0, found.output
    answer = json.loads(found.stdout)
    assert answer["version"] == "v0001" and len(answer["neighbours"]) == 2
    assert answer["neighbours"][0]["doc_id"] == "corpus/space_mars.txt"

    new = tmp_path / "new.jsonl"
    new.write_text(
        json.dumps({"id": "z", "text": "Zorbland is a country. Its capital is Quibbletown."}) + "\n"
    )
    added = _run("add", str(out), str(new))
    assert added.exit_code == 0, added.output and "added 1 documents" in added.stdout
    found = _run("search", str(out), "capital of Zorbland", "-k", "1", "--json")
    assert json.loads(found.stdout)["neighbours"][0]["doc_id"] == "z"

    table = _run("search", str(out), "violin strings")
    assert table.exit_code == 0 and "corpus/music_violin.txt" in table.stdout

    info = _run("info", str(out), "--json")
    manifest = json.loads(info.stdout)
    assert manifest["n_documents"] == 11 and manifest["chunk_size"] == 16
    assert [s["reason"] for s in manifest["skipped"]] == ["binary"]
    plain = _run("info", str(out))
    assert plain.exit_code == 0 and "n_chunks" in plain.stdout

    precomputed = _run("neighbours", str(out), "-k", "2")
    assert precomputed.exit_code == 0, precomputed.output
    assert (out / "versions" / "v0001" / "neighbours-k2.npy").is_file()
    without = _run("neighbours", str(out), "-k", "2", "--never-from", "corpus/music")
    assert without.exit_code == 0, without.output
    from index.layout import neighbours_file

    assert (out / "versions" / "v0001" / neighbours_file(2, ("corpus/music",))).is_file()
    wide = _run("neighbours", str(out), "-k", "2", "--query-chunks", "2")  # widens nothing without it
    assert wide.exit_code == 2 and "needs never_from" in _error_line(wide)


def test_build_with_a_given_tokenizer_then_mismatch_exits_2(tmp_path, corpus, tokenizer):
    out = tmp_path / "ix"
    tokenizer.save(tmp_path / "tok.json")
    built = _run(
        "build",
        str(corpus),
        "--out",
        str(out),
        "--tokenizer",
        str(tmp_path / "tok.json"),
        "--chunk-size",
        "16",
    )
    assert built.exit_code == 0, built.output
    other = Tokenizer.train(["something else entirely"] * 3, vocab_size=300)
    other.save(tmp_path / "other.json")
    result = _run("search", str(out), "mars", "--tokenizer", str(tmp_path / "other.json"))
    assert result.exit_code == 2 and "tokenizer mismatch" in _error_line(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["build", "{tmp}/missing", "--out", "{tmp}/ix"], "unknown source"),
        (["build", "wordnet", "--out", "{tmp}/ix"], "apt-get install dict-wn"),
        (["build", "{tmp}", "--out", "{tmp}/ix", "--tokenizer", "{tmp}/none.json"], "no tokenizer at"),
        (["search", "{tmp}", "query"], "is not an index"),
        (["info", "{tmp}"], "is not an index"),
        (["add", "{tmp}", "facts"], "is not an index"),
        (["neighbours", "{tmp}"], "is not an index"),
        (["prune", "{tmp}", "--keep", "1"], "is not an index folder"),
        (["prune", "{tmp}/missing"], "is not an index folder"),
        (["prune", "{tmp}", "--keep", "0"], "--keep must be >= 1"),
        (["build", "{tmp}", "--out", "{tmp}/ix", "--keep-versions", "-1"], "--keep-versions must be >= 0"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("RETRO_DICTD_DIR", str(tmp_path))
    (tmp_path / "doc.txt").write_text("some text")
    result = _run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message in _error_line(result) and "Traceback" not in result.output


def test_build_keeps_three_versions_by_default(tmp_path, corpus, tokenizer):
    out = tmp_path / "ix"
    tokenizer.save(tmp_path / "tok.json")
    common = ["build", str(corpus), "--out", str(out), "--tokenizer", str(tmp_path / "tok.json")]
    for _ in range(3):
        assert _run(*common).exit_code == 0
    fourth = _run(*common)
    assert fourth.exit_code == 0, fourth.output
    assert "deleted old versions v0001 (keeping 3)" in _error_line(fourth)
    assert version_names(out) == ["v0002", "v0003", "v0004"]
    assert "deleted" in _error_line(_run(*common, "--keep-versions", "1"))
    assert version_names(out) == ["v0005"]
    kept_all = _run(*common, "--keep-versions", "0")
    assert kept_all.exit_code == 0 and "deleted" not in kept_all.output
    assert version_names(out) == ["v0005", "v0006"]


def test_info_lists_versions_and_prune_deletes_the_oldest(tmp_path, topic_documents, tokenizer):
    from tests.index.hashing_encoder import HashingEncoder

    out = tmp_path / "ix"
    for i in range(3):
        build_index(topic_documents[: i + 2], out, tokenizer, HashingEncoder(), chunk_size=16)
    (out / "CURRENT").write_text("v0002\n")

    info = _run("info", str(out))
    assert info.exit_code == 0, info.output
    rows = [re.search(r"(v000\d) +[\d.]+ kB( +CURRENT)?", line) for line in info.stdout.splitlines()]
    listed = {row.group(1): bool(row.group(2)) for row in rows if row}
    assert listed == {"v0001": False, "v0002": True, "v0003": False}  # sizes, CURRENT marked

    refused = _run("prune", str(out), "--keep", "0")
    assert refused.exit_code == 2 and "--keep must be >= 1" in _error_line(refused)
    assert version_names(out) == ["v0001", "v0002", "v0003"]

    pruned = _run("prune", str(out), "--keep", "1")
    assert pruned.exit_code == 0, pruned.output
    text = _error_line(pruned)
    assert "deleted v0001 (" in text and "deleted v0003 (" in text and "freed" in text
    assert "1 versions remain: v0002 (CURRENT v0002)" in text
    assert version_names(out) == ["v0002"]
    again = _run("prune", str(out), "--keep", "1")
    assert again.exit_code == 0 and "nothing to delete" in again.stdout
