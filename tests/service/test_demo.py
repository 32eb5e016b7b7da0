"""`retro demo`'s stages: the serving index is built once with the model's tokenizer and reused,
held-out facts are added once, the printed example calls work, and missing models fail clearly."""

from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from index.corpus import Document
from service.cli import app
from service.cli import demo_stages as demo
from tests.index.hashing_encoder import HashingEncoder
from tests.service.conftest import DOCUMENTS


def _corpus(tmp_path) -> list[str]:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in DOCUMENTS))
    return [str(path)]


def test_index_is_built_with_the_models_tokenizer_then_reused(tmp_path, retro_checkpoint, tokenizer):
    sources, encoder = _corpus(tmp_path), HashingEncoder()
    index_dir = tmp_path / "index"
    assert demo.reusable_index(index_dir, tokenizer, 16, sources) is None  # nothing there yet

    version = demo.ensure_index(index_dir, retro_checkpoint, sources, "cpu", encoder)
    manifest = json.loads((index_dir / "versions" / version / "manifest.json").read_text())
    assert manifest["tokenizer_fingerprint"] == tokenizer.fingerprint and manifest["chunk_size"] == 16
    encoded = encoder.texts_encoded

    assert demo.ensure_index(index_dir, retro_checkpoint, sources, "cpu", encoder) == version
    assert encoder.texts_encoded == encoded  # reused: nothing embedded again
    assert sorted(p.name for p in (index_dir / "versions").iterdir()) == [version]
    # other sources or another chunk size are not the demo's index: they are rebuilt
    assert demo.reusable_index(index_dir, tokenizer, 16, sources + ["facts"]) is None
    assert demo.reusable_index(index_dir, tokenizer, 32, sources) is None


def test_a_rebuilt_demo_index_replaces_the_old_version(tmp_path, retro_checkpoint):
    """New demo sources (or models) rebuild the index; the version no longer served is deleted."""
    sources, encoder = _corpus(tmp_path), HashingEncoder()
    index_dir = tmp_path / "index"
    first = demo.ensure_index(index_dir, retro_checkpoint, sources, "cpu", encoder)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "more", "text": "Quorvia is a made-up country."}) + "\n")
    second = demo.ensure_index(index_dir, retro_checkpoint, [*sources, str(extra)], "cpu", encoder)
    assert second != first
    assert sorted(p.name for p in (index_dir / "versions").iterdir()) == [second]


def test_heldout_facts_are_added_once(tmp_path, retro_checkpoint):
    sources, encoder = _corpus(tmp_path), HashingEncoder()
    index_dir = tmp_path / "index"
    demo.ensure_index(index_dir, retro_checkpoint, sources, "cpu", encoder)
    new = [Document("facts/country/quorvia/p2", "The capital of Quorvia is Lindenmoor.", "facts")]

    assert demo.add_heldout_facts(index_dir, retro_checkpoint, "cpu", encoder, documents=new) == 1
    assert demo.add_heldout_facts(index_dir, retro_checkpoint, "cpu", encoder, documents=new) == 0
    from index.retriever import Retriever
    from index.store import IndexStore
    from retro.tokenizer import Tokenizer

    store = IndexStore.open(index_dir, Tokenizer.load(retro_checkpoint), encoder=encoder)
    (found,) = Retriever(store).search(["capital of Quorvia"], 1)
    assert found.doc_ids[0] == "facts/country/quorvia/p2"


def test_heldout_documents_are_exactly_the_heldout_and_made_up_entities():
    from index.facts import fact_documents, heldout_entities

    documents = demo.heldout_documents()
    ids = {d.doc_id for d in documents}
    heldout = heldout_entities()
    assert {d.doc_id for d in fact_documents("heldout")} <= ids
    assert not any(d.doc_id for d in fact_documents("train") if d.doc_id in ids)
    assert all(d.doc_id.split("/", 1)[1].rsplit("/", 1)[0] in heldout for d in fact_documents("heldout"))
    # the reading set's development passages, never its test passages nor any training document
    assert any(i.startswith("reading/dev/") for i in ids)
    assert not any(i.startswith(("reading/test/", "reading/train/", "reading-qa/", "facts-qa/")) for i in ids)


def test_printed_example_calls_work_against_the_service(client):
    for call in demo.example_calls("http://127.0.0.1:8000"):
        words = shlex.split(call)
        url = next(w for w in words if w.startswith("http://"))
        body = json.loads(words[words.index("-d") + 1])
        response = client.post(url.removeprefix("http://127.0.0.1:8000"), json=body)
        assert response.status_code == 200, (call, response.text)


def test_demo_refuses_a_busy_port_before_any_work(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path / "data"), "--port", str(port)])
    assert result.exit_code == 2 and "already in use" in " ".join(result.output.split())
    assert not (tmp_path / "data").exists()


def test_demo_without_models_fails_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "SHIPPED_MODELS", tmp_path / "no-models")
    result = CliRunner().invoke(app, ["demo", "--data-dir", str(tmp_path / "data"), "--no-serve"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "no-models/demo" in output and "TRAIN=1" in output


def test_train_runs_the_recipe_commands_into_the_data_folder(tmp_path, monkeypatch):
    """`make demo TRAIN=1` runs the recipe's commands; here the same code path with a tiny recipe."""
    from retro.checkpoint import load_checkpoint

    corpus = _corpus(tmp_path)[0]
    monkeypatch.setattr(
        demo, "TRAIN_INDEX_COMMAND", f"retro index build {corpus} --out {{index}} --chunk-size 16 "
        "--vocab-size 400 --device cpu",
    )  # fmt: skip
    tiny = "--steps 2 --batch-size 2 --device cpu --ckpt-every 1"
    stages = (
        f"retro train --preset tiny --index {{index}} --out {{runs}}/demo-stage1 {tiny}",
        f"retro train --preset tiny --index {{index}} --out {{runs}}/demo --init-from {{runs}}/demo-stage1 "
        f"--config copy_bag_window=4 {tiny}",
    )
    monkeypatch.setattr(demo, "TRAIN_RETRO_COMMANDS", stages)
    monkeypatch.setattr(
        demo,
        "TRAIN_READER_COMMAND",
        "retro reader train --out {runs}/span-reader --steps 2 --rank 2 --no-wiki",
    )
    monkeypatch.setattr(
        demo, "TRAIN_BASELINE_COMMAND",
        f"retro train --preset tiny --baseline --index {{index}} --out {{runs}}/demo-baseline {tiny}",
    )  # fmt: skip
    monkeypatch.setattr(
        demo,
        "TRAIN_RAG_COMMAND",
        f"retro train --preset tiny-rag --index {{index}} --out {{runs}}/demo-rag {tiny}",
    )
    paths = demo.DemoPaths(tmp_path / "data")
    models = demo.train_models(paths)
    assert models == demo.DemoModels(
        paths.runs / "demo-served", paths.runs / "demo-baseline", paths.runs / "demo-rag"
    )
    assert (models.retro / "span_reader.safetensors").is_file()  # the reader stored beside stage 5
    retro_dir = models.retro
    model, tokenizer, meta = load_checkpoint(retro_dir)
    baseline, baseline_tokenizer, _ = load_checkpoint(models.baseline)
    rag, rag_tokenizer, rag_meta = load_checkpoint(models.rag)
    assert model.config.uses_retrieval and not baseline.config.uses_retrieval and rag.config.in_context
    assert meta["training"]["step"] == 2 and tokenizer.fingerprint == baseline_tokenizer.fingerprint
    assert rag_meta["training"]["step"] == 2 and rag_tokenizer.fingerprint == tokenizer.fingerprint
    assert model.config.copy_bag_window == 4 and meta["init_from"]["path"] == str(
        (paths.runs / "demo-stage1").resolve()
    )

    monkeypatch.setattr(
        demo, "TRAIN_RETRO_COMMANDS", ("retro train --preset no-such-preset --index {index}",)
    )
    with pytest.raises(RuntimeError, match="no-such-preset"):
        demo.train_models(paths)


# --- the checkpoints the repository ships (models/) ---------------------------------------------


def test_shipped_demo_models_load_fit_the_budget_and_carry_cards():
    from retro.checkpoint import load_checkpoint
    from retro.evaluate import training_tokens

    models = demo.shipped_models()
    folders = (models.retro, models.baseline, models.rag)
    assert models.rag is not None  # the repository ships the retrieval-in-prompt comparator
    files = [p for folder in folders for p in folder.iterdir()]
    assert all(p.stat().st_size <= 16 * 2**20 for p in files if p.suffix == ".safetensors")
    assert sum(p.stat().st_size for p in files) <= 48 * 2**20
    model, tokenizer, _ = load_checkpoint(models.retro)
    baseline, baseline_tokenizer, baseline_meta = load_checkpoint(models.baseline)
    rag, rag_tokenizer, rag_meta = load_checkpoint(models.rag)
    assert tokenizer.fingerprint == baseline_tokenizer.fingerprint == rag_tokenizer.fingerprint
    assert model.config.uses_retrieval and not baseline.config.uses_retrieval and rag.config.in_context
    small, large = model.parameter_counts(), baseline.parameter_counts()
    assert large["non_embedding"] >= 10 * small["non_embedding"]  # the RETRO paper's comparison
    # the comparator is of about RETRO's total size, and it and the baseline saw the same tokens
    assert 0.9 <= rag.parameter_counts()["total"] / small["total"] <= 1.1
    assert training_tokens(baseline_meta) == training_tokens(rag_meta) > 0
    for folder in folders:
        card = (folder / "README.md").read_text()
        for needed in ("retro train", "retro export", "fact accuracy", "bits per byte", "Machine", "Date"):
            assert needed in card, (folder, needed)


def test_shipped_demo_model_answers_facts_it_only_finds_in_its_index(tmp_path, encoder):
    """Held-out entities (never in training) are answered, as completions and as questions, once
    their documents are indexed."""
    from index.build import build_index
    from index.facts import fact_documents, fact_pairs
    from index.retriever import Retriever
    from index.store import IndexStore
    from retro.checkpoint import load_checkpoint
    from retro.evaluate import evaluate_facts

    model, tokenizer, _ = load_checkpoint(demo.shipped_models().retro)
    chosen = {"country/algeria", "country/belarus", "country/belgium", "country/azerbaijan"}
    documents = [
        d for d in fact_documents("heldout") if d.doc_id.split("/", 1)[1].rsplit("/", 1)[0] in chosen
    ]
    build_index(documents, tmp_path / "index", tokenizer, encoder, chunk_size=model.config.chunk_size)
    retriever = Retriever(IndexStore.open(tmp_path / "index", tokenizer, encoder))
    pairs = [p for p in fact_pairs("heldout") if p.entity in chosen]
    with_index = evaluate_facts(model, tokenizer, retriever, pairs, use_retrieval=True)
    without = evaluate_facts(model, tokenizer, retriever, pairs, use_retrieval=False)
    assert len(pairs) == 16 and with_index.correct >= 12, [
        (a.prompt, a.generated) for a in with_index.answers
    ]
    assert without.correct <= 2  # the weights alone do not know them
    # questions too: the index holds only the declarative phrasings of these entities
    questions = evaluate_facts(model, tokenizer, retriever, pairs, style="question", use_retrieval=True)
    assert questions.correct >= 10, [(a.prompt, a.generated) for a in questions.answers]
