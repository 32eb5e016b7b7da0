"""`retro eval` with the retrieval-in-prompt comparator beside RETRO and the baseline: scored in
every retrieval setting RETRO is (bits per byte, facts, the reading set, the general-text table),
with random tiny models on a tiny index (the numbers are not the point; that each is there is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from index.build import build_index
from index.corpus import Document
from index.facts import FactPair
from index.reading import ReadingItem
from index.retriever import Retriever
from index.store import IndexStore
from retro.checkpoint import load_checkpoint, save_checkpoint
from retro.evaluate import bits_per_byte
from retro.evaluation import run_evaluation
from retro.in_context import PassageTemplate
from retro.report import REPORT_MD, write_report
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder

from .conftest import make_model, tiny_config

M, R = 8, 16  # chunks hold the overlap table's 8-grams
NAMES = ["Kalomi", "Ruveto", "Sanedi", "Pogafe", "Zubixo", "Hakalo", "Mirusa", "Tovesa"]


def documents(name: str, capital: str) -> list[Document]:
    key = f"toy/country/{name.lower()}"
    return [
        Document(f"{key}/p1", f"{name} has its capital at {capital}.", "toy"),
        Document(f"{key}/p2", f"The capital of {name} is {capital}.", "toy"),
    ]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    capitals = {n: n[::-1].title() for n in NAMES}
    train = [d for n in NAMES[:-2] for d in documents(n, capitals[n])]
    heldout = [d for n in NAMES[-2:] for d in documents(n, capitals[n])]
    tokenizer = Tokenizer.train([d.text for d in train + heldout] * 4, vocab_size=300)
    index_dir = tmp_path_factory.mktemp("index")
    build_index(train, index_dir, tokenizer, HashingEncoder(), chunk_size=M)
    pairs = [
        FactPair(f"country/{n.lower()}", f"Capital of {n}?", f"The capital of {n} is", capitals[n])
        for n in NAMES[-2:]
    ]
    folder = tmp_path_factory.mktemp("runs")
    budget = PassageTemplate.for_tokenizer(tokenizer).passages_budget(2, R)
    shape = dict(chunk_size=M, retrieved_len=R)
    plain = dict(cca_layers=(), copy_head=False, neighbour_prev_tokens=0, **shape)
    runs = [
        save_checkpoint(folder / "toy-retro", make_model(tiny_config(**shape)), tokenizer),
        save_checkpoint(folder / "toy-baseline", make_model(tiny_config(**plain)), tokenizer),
        save_checkpoint(
            folder / "toy-rag",
            make_model(tiny_config(**plain, in_context=True, max_seq_len=budget + 4 * M)),
            tokenizer,
            meta={"in_context": True},
        ),
    ]
    yield index_dir, tokenizer, runs, pairs, heldout
    torch.set_num_threads(threads)


def test_bits_per_byte_of_the_comparator_in_every_mode(toy):
    index_dir, tokenizer, runs, _, heldout = toy
    store = IndexStore.open(index_dir, tokenizer, HashingEncoder())
    rag, _, _ = load_checkpoint(runs[2])
    results = {
        mode: bits_per_byte(rag, tokenizer, Retriever(store), heldout, mode=mode).bpb
        for mode in ("retrieval", "leakage_free", "random", "off")
    }
    assert all(np.isfinite(v) and v > 0 for v in results.values())
    assert results["retrieval"] != results["off"]  # the passages are read


def test_retro_eval_scores_the_comparator_beside_retro_and_the_baseline(toy, tmp_path):
    index_dir, _, runs, pairs, heldout = toy

    def item(kind, pair, prompt):
        docs = tuple(f"toy/{pair.entity}/p{i}" for i in (1, 2))
        return ReadingItem(kind, pair.entity, "capital", "toy", kind, prompt, pair.answer, docs)

    reading = [item("question", p, p.question) for p in pairs] + [
        item("prefix", p, p.completion) for p in pairs
    ]
    general = [Document("toy/general/0", "Kalomi has its capital at Imolak, far from the sea.")]
    results = run_evaluation(
        runs,
        index_dir,
        encoder=HashingEncoder(),
        fact_sets={"toy held-out": pairs},
        extra_documents=heldout,
        bpb_documents=heldout[:2],
        log=lambda s: None,
        reading_items=reading,
        general_documents=general,
    )
    models = results["models"]
    rag, retro, base = models["toy-rag"], models["toy-retro"], models["toy-baseline"]
    assert (rag["kind"], retro["kind"], base["kind"]) == (
        "retrieval in prompt",
        "RETRO",
        "no-retrieval baseline",
    )
    assert set(rag["bpb"]) == set(retro["bpb"]) == {"retrieval", "leakage_free", "random", "off"}
    assert set(rag["facts"]["toy held-out"]) == set(retro["facts"]["toy held-out"])
    assert rag["facts"]["toy held-out"]["completion, retrieval on"]["n"] == len(pairs)
    assert set(rag["reading"]["summary"]) == set(retro["reading"]["summary"]) == {"on", "off", "random"}
    on = rag["reading"]["summary"]["on"]
    assert all(row["retrieved"]["n"] == row["first"]["n"] for row in on.values())
    settings = results["general_text"]["settings"]
    assert settings == [
        "toy-retro, retrieval on",
        "toy-retro, retrieval off",
        "toy-rag, retrieval on",
        "toy-rag, retrieval off",
        "toy-baseline",
    ]
    assert results["general_text"]["reference"] == "toy-retro, retrieval on"
    markdown = (write_report(results, tmp_path / "report")[0].parent / REPORT_MD).read_text()
    assert "| | toy-retro | toy-baseline | toy-rag |" in markdown and "retrieval in prompt" in markdown
