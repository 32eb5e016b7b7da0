"""Sliced builds: N workers' slices, run one after another, then one assembly = a one-worker build;
a killed slice resumes; bad slice specs, missing slices and mixed settings are clear errors."""

from __future__ import annotations

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
from index.build import build_index, embed_slice
from index.corpus import Document
from index.layout import CHUNK_DOC, CHUNK_POS, CHUNKS, DOCUMENTS, EMBEDDINGS, MANIFEST, WORK_DIR, read_json
from index.retriever import Retriever
from index.slices import Slice, parse_slice, slice_bounds
from index.sources import read_sources
from index.store import IndexStore
from service.cli import app
from tests.index.hashing_encoder import HashingEncoder

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK, SHARD = 8, 3
QUERIES = ["sea otters crack shellfish", "violin strings bow", "Caesar Rubicon", "moons of Mars"]


@pytest.fixture()
def documents(topic_documents) -> list[Document]:
    """The topic documents, some long enough for several chunks, and a duplicate id (skipped)."""
    longer = [Document(f"{d.doc_id}/long", " ".join([d.text] * (i % 4 + 1)), "test") for i, d in
              enumerate(topic_documents)]  # fmt: skip
    return [*topic_documents, *longer, Document("animals/otter", "a duplicate id", "test")]


def _one_worker(out, documents, tokenizer, **kwargs):
    return build_index(
        documents, out, tokenizer, HashingEncoder(), chunk_size=CHUNK, shard_size=SHARD, **kwargs
    )


def _slice(out, documents, tokenizer, part, encoder=None, **kwargs):
    encoder = encoder or HashingEncoder()
    return embed_slice(documents, out, tokenizer, encoder, part, chunk_size=CHUNK, shard_size=SHARD, **kwargs)


def _assert_same_version(a: Path, b: Path, tokenizer) -> None:
    """The same chunks in the same order, the same vectors, documents and search results."""
    for name in (CHUNKS, CHUNK_DOC, CHUNK_POS, EMBEDDINGS, DOCUMENTS):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = read_json(a / MANIFEST), read_json(b / MANIFEST)
    for key in ("n_documents", "n_chunks", "n_tokens", "corpus_fingerprint", "faiss_factory", "skipped"):
        assert ma[key] == mb[key], key
    found = [Retriever(IndexStore.open(v, tokenizer, HashingEncoder())).search(QUERIES, k=5) for v in (a, b)]
    for x, y in zip(*found, strict=True):
        assert x.doc_ids == y.doc_ids and np.allclose(x.scores, y.scores)


@pytest.mark.parametrize(
    ("lengths", "count"),
    [([5, 5, 5, 5], 4), ([1, 100, 1, 1, 1, 50], 3), ([10], 3), ([3, 1, 4, 1, 5, 9, 2, 6], 5), ([], 2)],
)
def test_slice_bounds_cover_the_corpus_in_order_with_about_equal_text(lengths, count):
    bounds = slice_bounds(lengths, count)
    assert bounds[0] == 0 and bounds[-1] == len(lengths) and len(bounds) == count + 1
    assert bounds == sorted(bounds)
    total = sum(lengths)
    for i in range(count):  # slice i starts at the first document at or after i/count of the text
        before = sum(lengths[: bounds[i]])
        assert before * count >= i * total
        if bounds[i] > 0:
            assert sum(lengths[: bounds[i] - 1]) * count < i * total
    assert slice_bounds([5, 5, 5, 5], 4) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("spec", "message"), [
    ("4/4", "I must be in 0..3"), ("-1/4", "expected I/N"), ("0/0", "at least 1 slice"),
    ("1", "expected I/N"), ("a/b", "expected I/N"), ("1/2/3", "expected I/N"),
])  # fmt: skip
def test_a_bad_slice_spec_is_a_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_slice(spec)
    assert parse_slice(" 2 / 5 ") == Slice(2, 5) and str(Slice(2, 5)) == "2/5"


@pytest.mark.parametrize("count", [1, 3, 7])
def test_slices_then_assembly_give_the_one_worker_version(tmp_path, documents, tokenizer, count):
    one = _one_worker(tmp_path / "one", documents, tokenizer)
    out = tmp_path / "sliced"
    reports = [_slice(out, documents, tokenizer, f"{i}/{count}") for i in range(count)]
    assert sum(r.n_chunks for r in reports) == one.n_chunks
    assert [r.first_document for r in reports[1:]] == [r.end_document for r in reports[:-1]]
    assert not (out / "CURRENT").exists()  # a slice makes no version

    assembler = HashingEncoder()
    report = build_index(
        documents, out, tokenizer, assembler, chunk_size=CHUNK, shard_size=SHARD, assemble=True
    )
    assert assembler.texts_encoded == 0 and report.slices == count
    assert report.version == "v0001" and (out / "CURRENT").read_text().strip() == "v0001"
    assert report.shards_reused == report.shards == sum(r.shards for r in reports)
    assert read_json(Path(report.version_dir) / MANIFEST)["slices"] == count
    assert not (out / WORK_DIR).exists()  # the slices' work is cleared once the version serves
    _assert_same_version(Path(one.version_dir), Path(report.version_dir), tokenizer)


def test_a_build_without_assemble_encodes_only_the_slices_not_done(tmp_path, documents, tokenizer):
    one = _one_worker(tmp_path / "one", documents, tokenizer)
    out = tmp_path / "sliced"
    done = [_slice(out, documents, tokenizer, f"{i}/3") for i in (0, 2)]
    rerun = HashingEncoder()
    assert _slice(out, documents, tokenizer, "2/3", rerun).already_done and rerun.texts_encoded == 0

    encoder = HashingEncoder()
    report = build_index(documents, out, tokenizer, encoder, chunk_size=CHUNK, shard_size=SHARD)
    assert encoder.texts_encoded == one.n_chunks - sum(r.n_chunks for r in done) > 0
    assert report.slices == 3
    _assert_same_version(Path(one.version_dir), Path(report.version_dir), tokenizer)


KILLED_SLICE_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from index.build import embed_slice
    from index.sources import read_sources
    from retro.tokenizer import Tokenizer
    from tests.index.hashing_encoder import HashingEncoder

    corpus, out, tokenizer_path = sys.argv[1:]

    def progress(stage, done, total):
        if stage == "embed" and done > 0:  # killed right after the first embedding shard is on disk
            os.kill(os.getpid(), signal.SIGKILL)

    embed_slice(list(read_sources([corpus], [])), out, Tokenizer.load(tokenizer_path), HashingEncoder(),
                "1/2", chunk_size=8, shard_size=3, progress=progress)
    """
)


def test_a_killed_slice_resumes_from_its_shards(tmp_path, documents, tokenizer):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in documents[:-1]:
        (corpus / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    script, tokenizer_path, out = tmp_path / "killed_slice.py", tmp_path / "tokenizer.json", tmp_path / "ix"
    tokenizer.save(tokenizer_path)
    script.write_text(KILLED_SLICE_SCRIPT)
    process = subprocess.run(
        [sys.executable, str(script), str(corpus), str(out), str(tokenizer_path)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr
    (folder,) = (out / WORK_DIR).glob("*/slice-1-of-2")
    assert len(list(folder.glob("embeddings-*.npy"))) == 1 and not (folder / "done.json").exists()

    corpus_docs = list(read_sources([str(corpus)], []))
    with pytest.raises(
        ValueError, match=r"2 of 2 slices are not finished: 0/2 \(0 shards on disk\), 1/2 \(1 shards"
    ):
        build_index(corpus_docs, out, tokenizer, HashingEncoder(), chunk_size=CHUNK, shard_size=SHARD,
                    assemble=True)  # fmt: skip
    encoder = HashingEncoder()
    resumed = _slice(out, corpus_docs, tokenizer, "1/2", encoder)
    assert resumed.shards_reused == 1 and encoder.texts_encoded == resumed.n_chunks - SHARD
    _slice(out, corpus_docs, tokenizer, "0/2")
    report = build_index(corpus_docs, out, tokenizer, HashingEncoder(), chunk_size=CHUNK, shard_size=SHARD,
                         assemble=True)  # fmt: skip
    one = _one_worker(tmp_path / "one", corpus_docs, tokenizer)
    _assert_same_version(Path(one.version_dir), Path(report.version_dir), tokenizer)


def test_slices_of_other_settings_or_counts_are_refused(tmp_path, documents, tokenizer):
    out = tmp_path / "ix"
    _slice(out, documents, tokenizer, "0/3")
    with pytest.raises(ValueError, match="cut into 3, not 4: every worker must be given the same N"):
        _slice(out, documents, tokenizer, "1/4")
    with pytest.raises(ValueError, match=f"chunk_size {CHUNK} there, 16 here"):
        embed_slice(documents, out, tokenizer, HashingEncoder(), "1/3", chunk_size=16, shard_size=SHARD)
    with pytest.raises(ValueError, match="corpus fingerprint .* there, .* here; 20 documents there, 19 here"):
        _slice(out, documents[2:], tokenizer, "1/3")
    # An assembly with other settings finds no slice of its own build and says whose there are.
    with pytest.raises(
        ValueError, match=f"nothing to assemble: .* holds no slice .*chunk_size {CHUNK} there, 16"
    ):
        build_index(
            documents, out, tokenizer, HashingEncoder(), chunk_size=16, shard_size=SHARD, assemble=True
        )
    with pytest.raises(ValueError, match="nothing to assemble"):  # and leaves no empty work folder behind
        build_index(documents, tmp_path / "new", tokenizer, HashingEncoder(), chunk_size=CHUNK, assemble=True)
    assert not (tmp_path / "new" / WORK_DIR).exists() or not any((tmp_path / "new" / WORK_DIR).iterdir())
    with pytest.raises(ValueError, match=r"2 of 3 slices are not finished: 1/3 \(0 shards on disk\), 2/3"):
        build_index(documents, out, tokenizer, HashingEncoder(), chunk_size=CHUNK, shard_size=SHARD,
                    assemble=True)  # fmt: skip
    assert not (out / "CURRENT").exists()


runner = CliRunner()


def test_cli_slices_then_assemble_and_its_errors_exit_2(tmp_path, monkeypatch, topic_documents, tokenizer):
    monkeypatch.setattr(index.encoder, "ChunkEncoder", lambda device="auto", **_: HashingEncoder())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in topic_documents:
        (corpus / f"{d.doc_id.replace('/', '_')}.txt").write_text(d.text)
    tokenizer.save(tmp_path / "tok.json")
    common = [str(corpus), "--out", str(tmp_path / "ix"), "--tokenizer", str(tmp_path / "tok.json"),
              "--chunk-size", "8", "--shard-size", "3"]  # fmt: skip

    def run(*args: str):
        return runner.invoke(app, ["index", "build", *common, *args])

    for args, message in [
        (["--slice", "2/2"], "slice 2/2: I must be in 0..1"),
        (["--slice", "x"], "--slice 'x': expected I/N"),
        (["--slice", "0/2", "--assemble"], "--slice and --assemble are two steps"),
        (["--assemble"], "nothing to assemble"),
    ]:
        result = run(*args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
    first = run("--slice", "0/2")
    assert first.exit_code == 0 and "slice 0/2: documents 0:" in first.stdout, first.output
    assert "when all 2 slices are done" in first.stdout
    not_yet = run("--assemble")
    assert not_yet.exit_code == 2 and "1 of 2 slices are not finished: 1/2" in " ".join(
        not_yet.output.split()
    )
    assert run("--slice", "1/2").exit_code == 0
    again = run("--slice", "1/2")
    assert again.exit_code == 0 and "was already done" in again.stdout
    built = run("--assemble")
    assert (
        built.exit_code == 0 and "built v0001" in built.stdout and "assembled from 2 slices" in built.stdout
    )
