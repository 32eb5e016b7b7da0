"""Evaluation: a tiny RETRO trained here answers facts that only its index holds (retrieval on beats
off), bits per byte is exact on hand-checkable cases, every retrieval mode runs, the leakage-free
mode excludes every document of an entity, and `retro eval` writes a report holding the numbers.

The toy corpus: 200 made-up countries with made-up capitals, three phrasings each (as in
`index.facts`); 10 entities are held out of training and added to the index afterwards, so no
model can know their capitals from its weights.
"""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from index.build import build_index
from index.corpus import Document
from index.facts import FactPair, entities
from index.fictional import fictional_documents, fictional_pairs
from index.neighbours import precompute_neighbours
from index.reading import ReadingItem
from index.retriever import Retriever
from index.store import IndexStore
from retro.checkpoint import save_checkpoint
from retro.config import RetroConfig
from retro.data import Recipe, TrainingData
from retro.evaluate import (
    bits_per_byte,
    bits_per_byte_by_overlap,
    entity_of,
    evaluate_facts,
    same_entity_doc_ids,
    training_tokens,
)
from retro.evaluation import index_holds, run_evaluation, spread, validation_documents
from retro.language_model import fit_neighbours
from retro.model import Retro
from retro.overlap import BUCKETS, NO_NEIGHBOURS
from retro.report import BPB_PLOT, FACTS_PLOT, REPORT_JSON, REPORT_MD, markdown, write_report
from retro.scoring import answer_first
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder
from tests.tiny_gpt2 import save_tiny_gpt2

N_ENTITIES, N_HELDOUT, STEPS = 200, 20, 400
SYLLABLES = ["ka", "lo", "mi", "ru", "ve", "to", "sa", "ne", "di", "po", "ga", "fe", "zu", "bi", "xo", "ha"]


def toy_documents(name: str, capital: str) -> list[Document]:
    key = f"toy/country/{name.lower()}"
    return [
        Document(f"{key}/p1", f"{name} has its capital at {capital}.", "toy"),
        Document(f"{key}/p2", f"The capital of {name} is {capital}.", "toy"),
        Document(f"{key}/p3", f"{name} (country). Capital city: {capital}.", "toy"),
    ]


def toy_config(vocab_size: int, **overrides) -> RetroConfig:
    base = dict(
        vocab_size=vocab_size, d_model=64, n_layers=3, n_heads=4, d_ff=128, max_seq_len=32, chunk_size=8,
        n_neighbours=2, retrieved_len=16, cca_layers=(1, 2), enc_layers=1, enc_d_model=32, enc_n_heads=2,
    )  # fmt: skip
    base.update(overrides)
    return RetroConfig(**base)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.set_num_threads(1)  # tiny models train faster on one thread of a shared 2-core machine
    rng = np.random.default_rng(0)
    names: dict[str, str] = {}
    while len(names) < N_ENTITIES:
        name = "".join(rng.choice(SYLLABLES, size=3)).title()
        names.setdefault(name, "".join(rng.choice(SYLLABLES, size=2)).title())
    items = list(names.items())
    train_docs = [d for name, capital in items[:-N_HELDOUT] for d in toy_documents(name, capital)]
    heldout_docs = [d for name, capital in items[-N_HELDOUT:] for d in toy_documents(name, capital)]
    pairs = [
        FactPair(f"country/{n.lower()}", f"What is the capital of {n}?", f"The capital of {n} is", c)
        for n, c in items[-N_HELDOUT:]
    ]
    tokenizer = Tokenizer.train([d.text for d in train_docs + heldout_docs] * 3, vocab_size=400)
    index_dir = tmp_path_factory.mktemp("toy-index")
    encoder = HashingEncoder()
    build_index(train_docs, index_dir, tokenizer, encoder, chunk_size=8)
    precompute_neighbours(index_dir, k=2)

    config = toy_config(tokenizer.vocab_size)
    data = TrainingData.from_index(index_dir, config, recipe=Recipe(), total_steps=STEPS)
    torch.manual_seed(0)
    model = Retro(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(STEPS):
        batch = data.batch(step, 16)
        loss = model.loss(batch.tokens, batch.neighbours, batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()

    store = IndexStore.open(index_dir, tokenizer, encoder)
    store.add_documents(heldout_docs)  # knowledge enters the index after training
    return SimpleNamespace(
        model=model,
        tokenizer=tokenizer,
        retriever=Retriever(store),
        encoder=encoder,
        index_dir=index_dir,
        heldout_docs=heldout_docs,
        all_texts={d.doc_id: d.text for d in train_docs + heldout_docs},
        pairs=pairs,
        final_loss=float(loss.detach()),
    )


# --- the model uses its neighbours ----------------------------------------------------------------
def test_trained_retro_answers_facts_only_the_index_holds(toy):
    on = evaluate_facts(toy.model, toy.tokenizer, toy.retriever, toy.pairs, use_retrieval=True)
    off = evaluate_facts(toy.model, toy.tokenizer, toy.retriever, toy.pairs, use_retrieval=False)
    assert on.n == off.n == N_HELDOUT and on.retrieval and not off.retrieval
    # measured here: 7/20 with retrieval, 0/20 without (the capitals are made up: no weights know them)
    assert on.accuracy >= 0.2, [(a.answer, a.generated) for a in on.answers]
    assert on.accuracy > off.accuracy + 0.15
    assert on.completion_tokens > 0 and on.tokens_per_second > 0 and on.seconds_per_answer > 0


def test_question_prompts_run_in_both_settings(toy):
    for use_retrieval in (True, False):
        result = evaluate_facts(
            toy.model,
            toy.tokenizer,
            toy.retriever,
            toy.pairs[:3],
            style="question",
            use_retrieval=use_retrieval,
        )
        assert result.n == 3 and [a.prompt for a in result.answers] == [p.question for p in toy.pairs[:3]]
    with pytest.raises(ValueError, match="prompt style"):
        evaluate_facts(toy.model, toy.tokenizer, toy.retriever, toy.pairs, style="essay")


def test_relevant_neighbours_beat_random_ones_in_bits_per_byte(toy):
    results = {
        mode: bits_per_byte(toy.model, toy.tokenizer, toy.retriever, toy.heldout_docs, mode=mode)
        for mode in ("retrieval", "leakage_free", "random", "off")
    }
    # every mode scores the same tokens and bytes, so the bits are comparable
    assert len({(r.n_tokens, r.n_bytes, r.n_documents) for r in results.values()}) == 1
    assert all(math.isfinite(r.bpb) and r.bpb > 0 for r in results.values())
    assert results["random"].bits != results["off"].bits  # random neighbours do reach the model
    assert results["retrieval"].bpb < results["random"].bpb


# --- bits per byte: exact cases -------------------------------------------------------------------
def test_uniform_model_gives_log2_vocab_bits_per_predicted_token(toy):
    """All-zero weights make every distribution uniform: bits = (tokens - 1) * log2(V), exactly,
    also for a document spanning several windows of max_seq_len (here 32 tokens)."""
    config = toy_config(toy.tokenizer.vocab_size, cca_layers=(), copy_head=False, neighbour_prev_tokens=0)
    model = Retro(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    texts = [" ".join(d.text for d in toy.heldout_docs[:12])] + [d.text for d in toy.heldout_docs[:8]]
    ids = [toy.tokenizer.encode(t) for t in texts]
    assert len(ids[0]) > 3 * config.max_seq_len  # ~120 tokens: four windows
    assert len({len(i) % config.chunk_size for i in ids}) > 1  # left padding of several lengths
    docs = [Document(f"x{i}", t) for i, t in enumerate(texts)]
    result = bits_per_byte(model, toy.tokenizer, None, docs, mode="off")
    predicted_bytes = sum(
        len(t.encode("utf-8")) - len(toy.tokenizer.decode(i[:1]).encode("utf-8"))
        for t, i in zip(texts, ids, strict=True)
    )
    n_predicted = sum(len(i) - 1 for i in ids)
    assert result.n_tokens == n_predicted and result.n_documents == len(texts)
    assert result.n_bytes == predicted_bytes
    assert result.bits == pytest.approx(n_predicted * math.log2(config.vocab_size), rel=1e-5)
    assert result.bpb == pytest.approx(result.bits / predicted_bytes)


def test_bits_match_the_log_probabilities_of_a_plain_forward(toy):
    """Mode off on the trained copy-head model: the fused target path equals -sum log p / ln 2."""
    doc = toy.heldout_docs[4]
    ids = toy.tokenizer.encode(doc.text)
    m = toy.model.config.chunk_size
    seq = [toy.model.config.pad_id] * ((-len(ids)) % m) + ids
    assert len(seq) <= toy.model.config.max_seq_len
    with torch.no_grad():
        logp = toy.model(torch.tensor([seq[:-1]]))[0]  # log-probs: the copy head is on
    lead = len(seq) - len(ids)
    expected = -sum(float(logp[lead + i - 1, ids[i]]) for i in range(1, len(ids))) / math.log(2)
    result = bits_per_byte(toy.model, toy.tokenizer, toy.retriever, [doc], mode="off")
    assert result.bits == pytest.approx(expected, rel=1e-4)


def test_bad_modes_are_refused(toy):
    with pytest.raises(ValueError, match="unknown bits-per-byte mode"):
        bits_per_byte(toy.model, toy.tokenizer, toy.retriever, toy.heldout_docs, mode="sideways")
    with pytest.raises(ValueError, match="needs a retriever"):
        bits_per_byte(toy.model, toy.tokenizer, None, toy.heldout_docs, mode="random")
    baseline = Retro(toy_config(toy.tokenizer.vocab_size, cca_layers=(), copy_head=False))
    with pytest.raises(ValueError, match="mode='off'"):
        bits_per_byte(baseline, toy.tokenizer, toy.retriever, toy.heldout_docs, mode="retrieval")


@pytest.fixture(scope="module")
def hf_folder(toy, tmp_path_factory):
    """A tiny GPT-2 with all-zero weights (uniform predictions) and its own BPE: no download."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    texts = [d.text for d in toy.heldout_docs] * 4
    return save_tiny_gpt2(
        folder, texts, vocab_size=300, n_layer=1, n_embd=16, n_positions=16, zero_weights=True
    )


def test_hugging_face_model_bits_per_byte_and_facts(toy, hf_folder):
    """A uniform GPT-2: (tokens - 1) * log2(V) bits, also over several overlapping 16-token windows."""
    from retro.hf_model import load_hf_model

    hf = load_hf_model(hf_folder)
    text = " ".join(d.text for d in toy.heldout_docs[:6])
    ids = hf.tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > 3 * hf.max_seq_len
    result = bits_per_byte(hf, None, None, [Document("x", text)], mode="off")
    assert result.n_tokens == len(ids) - 1
    assert result.bits == pytest.approx((len(ids) - 1) * math.log2(hf.model.config.vocab_size), rel=1e-5)
    assert result.n_bytes == len(text.encode()) - len(hf.tokenizer.decode(ids[:1]).encode())
    with pytest.raises(ValueError, match="mode='off'"):
        bits_per_byte(hf, None, toy.retriever, [Document("x", text)], mode="retrieval")
    facts = evaluate_facts(hf, None, toy.retriever, toy.pairs[:2], use_retrieval=True)
    assert facts.n == 2 and not facts.retrieval and facts.completion_tokens > 0
    # a prompt longer than the model takes is a wrong answer with its reason, not a crash
    long_pair = FactPair("x", "?", " ".join(["The capital of Kaloka is"] * 8), "Mibi")
    too_long = evaluate_facts(hf, None, None, [long_pair])
    assert too_long.n == 1 and too_long.correct == 0 and "limit" in too_long.answers[0].error


# --- leakage-free exclusion -----------------------------------------------------------------------
class SpyRetriever:
    """Wraps a Retriever and records what each search excluded and what it returned."""

    def __init__(self, inner: Retriever):
        self.inner, self.store, self.window, self.calls = inner, inner.store, inner.window, []

    def search(self, texts, k, exclude_doc_ids=None):
        found = self.inner.search(texts, k, exclude_doc_ids)
        self.calls.append((exclude_doc_ids, [n.doc_ids for n in found]))
        return found


def test_leakage_free_mode_excludes_every_document_of_the_entity(toy):
    def same_entity_hits(mode: str) -> int:
        hits = searches = 0
        for doc in toy.heldout_docs:  # one document per call: each search belongs to `doc`
            entity = entity_of(doc.doc_id)
            phrasings = {f"{entity}/p{i}" for i in (1, 2, 3)}
            spy = SpyRetriever(toy.retriever)
            bits_per_byte(toy.model, toy.tokenizer, spy, [doc], mode=mode)
            searches += len(spy.calls)  # documents shorter than a chunk + 1 token need no search
            for excluded, found in spy.calls:
                wanted = phrasings if mode == "leakage_free" else {doc.doc_id}
                assert all(e == wanted for e in excluded)
                assert not any(d == doc.doc_id for row in found for d in row)
                hits += sum(entity_of(d) == entity for row in found for d in row)
        assert searches >= len(toy.heldout_docs) // 2
        return hits

    # with the knowledge in the index, other phrasings of the same entity are retrieved ...
    assert same_entity_hits("retrieval") > 0
    # ... and the leakage-free mode never lets one through
    assert same_entity_hits("leakage_free") == 0


def test_evaluation_retrieves_the_k_the_model_is_served_with(toy):
    """A model exported with `--neighbours 3` (config `inference_neighbours`) is evaluated as it is
    served: every search asks for 3 neighbours, in bits per byte and in fact accuracy."""
    model = copy.deepcopy(toy.model)
    model.config = model.config.replace(inference_neighbours=3)
    asked: list[int] = []

    class KSpy(SpyRetriever):
        def search(self, texts, k, exclude_doc_ids=None):
            asked.append(k)
            return self.inner.search(texts, k, exclude_doc_ids)

    spy = KSpy(toy.retriever)
    bits_per_byte(model, toy.tokenizer, spy, toy.heldout_docs[:2], mode="retrieval")
    bits_per_byte(model, toy.tokenizer, spy, toy.heldout_docs[:2], mode="random")  # no search
    evaluate_facts(model, toy.tokenizer, spy, toy.pairs[:2], use_retrieval=True)
    assert asked and set(asked) == {3}
    asked.clear()
    evaluate_facts(toy.model, toy.tokenizer, spy, toy.pairs[:2], use_retrieval=True)
    assert asked and set(asked) == {toy.model.config.n_neighbours}


def test_same_entity_doc_ids():
    ids = ["facts/country/chad/p1", "facts/country/chad/p2", "facts/country/chile/p1", "wiki/Chad"]
    assert entity_of("facts/country/chad/p2") == "facts/country/chad"
    assert entity_of("wiki/Chad") is None
    assert same_entity_doc_ids("facts/country/chad/p2", ids) == {
        "facts/country/chad/p1",
        "facts/country/chad/p2",
    }
    assert same_entity_doc_ids("wiki/Chad", ids) == {"wiki/Chad"}


# --- small helpers --------------------------------------------------------------------------------
def test_answer_matching_normalises_case_and_whitespace():
    assert answer_first("Buenos Aires", " buenos   AIRES, the largest city")
    assert not answer_first("Paris", " Lyon.")


def test_fit_neighbours_cuts_or_pads_to_the_model_length():
    tokens = np.arange(1, 9).reshape(1, 2, 4)
    assert fit_neighbours(tokens, 3, 0).tolist() == [[[1, 2, 3], [5, 6, 7]]]
    assert fit_neighbours(tokens, 6, 0).tolist() == [[[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 0, 0]]]


def test_training_tokens_from_checkpoint_meta():
    assert training_tokens({"training": {"tokens_seen": 1638400, "step": 400}}) == 1638400
    assert training_tokens({"preset": "demo"}) is None
    # the comparator's trainer counts 416-token contexts; its text is the 256-token sequences
    comparator = {
        "training": {"tokens_seen": 1000 * 16 * 416},
        "in_context": {"text_len": 256, "context_len": 416},
    }
    assert training_tokens(comparator) == 1000 * 16 * 256


def test_spread_takes_an_even_deterministic_sample():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread(list(range(3)), None) == [0, 1, 2] == spread(list(range(3)), 7)


def test_fictional_entities_are_unknown_and_their_answers_are_in_their_documents():
    docs, pairs = fictional_documents(), fictional_pairs()
    assert len(docs) == 60 and len({d.doc_id for d in docs}) == 60
    assert len(pairs) >= 60
    real_names = {e.name.lower() for e in entities()}
    texts = {d.doc_id: d.text for d in docs}
    for pair in pairs:
        name = pair.completion.split(" of ")[-1].split(" is")[0].split(" was")[0]
        assert name.lower() not in real_names
        # phrasing p2 holds "<completion> <answer>" verbatim, as in index.facts
        assert f"{pair.completion} {pair.answer}" in texts[f"fictional/{pair.entity}/p2"]


# --- bits per byte on general text by neighbour overlap ------------------------------------------
PASSAGES = [
    "Rivers carry silt down from the hills every spring, and the farmers along the banks wait "
    "for the water to fall before they plant their barley in the dark wet soil.",
    "The old lighthouse keeper counted ships through the long winter nights and wrote each name "
    "in a blue book that his daughter later gave to the harbour museum.",
    "Bees return to the hive before a storm, and beekeepers say that a quiet hive in the morning "
    "means rain will come before the evening bells.",
]
OPENERS = ["Travellers wrote home about it at all.", "Old maps barely show it.", "Few poems mention it."]
CLOSER = "Then we walked back along the road, singing about bread and cheese."


def general_documents(passages: list[str]) -> list[Document]:
    """Text in neither training nor the index; with `passages` quoted in its middle (when an index
    holds those, some chunks overlap their neighbours and others do not)."""
    return [
        Document(f"toy/general/{i}", " ".join([OPENERS[i % 3], *passages[i : i + 1], CLOSER]))
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def library(toy, tmp_path_factory):
    """A second tiny index, holding long passages that the general text quotes."""
    index_dir = tmp_path_factory.mktemp("library-index")
    documents = [Document(f"library/{i}", text) for i, text in enumerate(PASSAGES)]
    build_index(documents, index_dir, toy.tokenizer, toy.encoder, chunk_size=8)
    return Retriever(IndexStore.open(index_dir, toy.tokenizer, toy.encoder))


def expected_chunks(tokenizer, documents, m: int, window_chunks: int) -> tuple[int, int]:
    """(chunks with a predicted token, those of them that start a window), counted by hand."""
    chunks = window_starts = 0
    for document in documents:
        n = len(tokenizer.encode(document.text))
        lead = (-n) % m
        for u in range((lead + n) // m):
            if (u + 1) * m - lead > max(1, u * m - lead):
                chunks += 1
                window_starts += u % window_chunks == 0
    return chunks, window_starts


def test_bits_per_byte_by_overlap_scores_every_model_on_the_same_chunks(toy, library):
    baseline = Retro(
        toy_config(toy.tokenizer.vocab_size, cca_layers=(), copy_head=False, neighbour_prev_tokens=0)
    ).eval()
    settings = {"on": (toy.model, "retrieval"), "off": (toy.model, "off"), "baseline": (baseline, "off")}
    documents = general_documents(PASSAGES)
    table = bits_per_byte_by_overlap(settings, "on", toy.tokenizer, library, documents)
    rows = {row["bucket"]: row for row in table["buckets"]}
    assert list(rows) == [*BUCKETS, NO_NEIGHBOURS]
    total = table["total"]
    m = toy.model.config.chunk_size
    n_chunks, window_starts = expected_chunks(toy.tokenizer, documents, m, toy.model.config.max_seq_len // m)
    assert sum(row["chunks"] for row in rows.values()) == total["chunks"] == n_chunks
    assert rows[NO_NEIGHBOURS]["chunks"] == window_starts  # a document's or a window's first chunk
    # the rows tile the text: their tokens, bytes and bits add up to `bits_per_byte`'s, per model
    for name, (model, mode) in settings.items():
        whole = bits_per_byte(model, toy.tokenizer, library, documents, mode=mode)
        assert sum(row["tokens"] for row in rows.values()) == total["tokens"] == whole.n_tokens
        assert sum(row["bytes"] for row in rows.values()) == total["bytes"] == whole.n_bytes
        assert sum(row["bits"][name] for row in rows.values()) == pytest.approx(whole.bits, rel=1e-4)
        assert total["bpb"][name] == pytest.approx(whole.bpb, rel=1e-4)
    # the quoted passages are in the index: chunks inside a quote overlap, the others do not ...
    assert rows["0%"]["chunks"] > 0 and rows["> 50%"]["chunks"] > 0
    # ... and that is where retrieval pays: copying (measured: 7.2 bpb on, 16.8 off)
    assert rows["> 50%"]["bpb"]["on"] < 0.7 * rows["> 50%"]["bpb"]["off"]
    with pytest.raises(ValueError, match="must retrieve"):
        bits_per_byte_by_overlap(settings, "off", toy.tokenizer, library, documents)


def test_index_holds_finds_documents_by_id_and_by_text(toy):
    store = toy.retriever.store
    stored = toy.heldout_docs[0]
    copied = Document("toy/elsewhere/copy", stored.text)  # the same text under another id
    novel = general_documents([])[0]
    found = index_holds(store, [stored, copied, novel])
    assert found["checked"] == 3
    assert found["doc_ids_found"] == [stored.doc_id]
    assert found["texts_found"] == [stored.doc_id, copied.doc_id]


# --- the report and the command -------------------------------------------------------------------
def test_run_evaluation_writes_a_report_holding_the_numbers(toy, hf_folder, tmp_path):
    run = save_checkpoint(
        tmp_path / "toy-retro",
        toy.model,
        toy.tokenizer,
        meta={
            "training": {"tokens_seen": STEPS * 16 * 32},
            "validation_fraction": 0.1,
            "index": str(toy.index_dir),
        },
    )
    baseline = Retro(
        toy_config(toy.tokenizer.vocab_size, cca_layers=(), copy_head=False, neighbour_prev_tokens=0)
    )
    base_run = save_checkpoint(tmp_path / "toy-baseline", baseline, toy.tokenizer)

    # reading items over the toy facts (the real reading set's prompts exceed the toy's 24-token limit)
    def item(kind, pair, prompt, **extra):
        docs = tuple(f"toy/{pair.entity}/p{i}" for i in (1, 2, 3))
        return ReadingItem(kind, pair.entity, "capital", "toy", kind, prompt, pair.answer, docs, **extra)

    reading_items = [item("question", p, p.question) for p in toy.pairs[:3]]
    reading_items += [item("prefix", p, p.completion) for p in toy.pairs[:3]]
    first = toy.pairs[0]
    reading_items.append(
        item(
            "update",
            first,
            first.question,
            other_answer="Nowhere",
            other_evidence=(f"toy/{first.entity}/p1",),
        )
    )
    results = run_evaluation(
        [run, base_run],
        toy.index_dir,
        compare_model=hf_folder,
        encoder=toy.encoder,
        fact_sets={"toy held-out": toy.pairs[:4]},
        extra_documents=toy.heldout_docs,
        bpb_documents=toy.heldout_docs[:6],
        log=lambda s: None,
        reading_items=reading_items,
        general_documents=general_documents([]),
    )
    retro_entry, base_entry = results["models"]["toy-retro"], results["models"]["toy-baseline"]
    assert set(retro_entry["bpb"]) == {"retrieval", "leakage_free", "random", "off"}
    assert set(base_entry["bpb"]) == {"off"}
    assert set(retro_entry["facts"]["toy held-out"]) == {
        "completion, retrieval on",
        "completion, retrieval off",
        "question, retrieval on",
        "question, retrieval off",
    }
    assert retro_entry["training_tokens"] == STEPS * 16 * 32
    assert retro_entry["parameters"] == toy.model.parameter_counts()
    assert retro_entry["decode"]["tokens_per_second"] > 0
    # the run's validation split of the index (decoded back from its chunks) gets its own bpb
    n_validation = results["protocol"]["validation_documents"]
    assert n_validation > 0 and results["protocol"]["validation_fraction"] == 0.1
    assert set(retro_entry["bpb_validation"]) == {"retrieval", "random", "off"}
    assert retro_entry["bpb_validation"]["off"]["n_documents"] == n_validation
    # the reading set: every item in every retrieval setting for RETRO, "off" only for the others
    summary = retro_entry["reading"]["summary"]
    assert set(summary) == {"on", "off", "random", "on, old removed"}
    assert sum(row["first"]["n"] for row in summary["on"].values()) == len(reading_items)
    assert all(row["retrieved"]["n"] == row["first"]["n"] for row in summary["on"].values())
    assert "retrieved" not in summary["off"]["question"]
    assert set(base_entry["reading"]["summary"]) == {"off"}
    assert len(retro_entry["reading"]["answers"]) == 3 * len(reading_items) + 1
    hf_entry = results["models"]["tiny-gpt2"]
    assert set(hf_entry["bpb"]) == {"off"} and hf_entry["kind"] == "Hugging Face causal LM"
    assert set(hf_entry["facts"]["toy held-out"]) == {"completion, retrieval off", "question, retrieval off"}

    out = tmp_path / "report"
    paths = write_report(results, out)
    assert {p.name for p in paths} == {REPORT_JSON, REPORT_MD, BPB_PLOT, FACTS_PLOT}
    assert (out / BPB_PLOT).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["models"]["toy-retro"]["bpb"]["off"]["bpb"] == pytest.approx(
        retro_entry["bpb"]["off"]["bpb"]
    )
    markdown = (out / REPORT_MD).read_text()
    assert "| | toy-retro | toy-baseline | tiny-gpt2 |" in markdown
    assert f"{retro_entry['bpb']['random']['bpb']:.3f}" in markdown
    validation_random = retro_entry["bpb_validation"]["random"]["bpb"]
    assert f"| bpb (validation documents), random neighbours | {validation_random:.3f}" in markdown
    on = retro_entry["facts"]["toy held-out"]["completion, retrieval on"]
    assert f"{100 * on['accuracy']:.1f}% ({on['correct']}/{on['n']}" in markdown
    assert on["scoring"] == "first span" and len(on["interval"]) == 2
    assert "## Reading set (dev split): toy-retro" in markdown

    # held-out general text by neighbour overlap: RETRO on and off and the baseline, same chunks
    general = results["general_text"]
    assert general["documents"] == 3 and results["protocol"]["general_documents"] == 3
    settings = ["toy-retro, retrieval on", "toy-retro, retrieval off", "toy-baseline"]
    assert general["settings"] == settings and general["reference"] == settings[0]
    assert general["not scored"] == {"tiny-gpt2": "its own tokenizer cuts other chunks"}
    in_index = general["in evaluation index"]
    assert in_index == {"checked": 3, "doc_ids_found": [], "texts_found": []}
    assert general["in training index"]["toy-retro"] == {"index": str(toy.index_dir), **in_index}
    assert "why" in general["in training index"]["toy-baseline"]  # its meta names no index
    total = general["total"]
    assert sum(row["chunks"] for row in general["buckets"]) == total["chunks"] > 0
    assert sum(row["bytes"] for row in general["buckets"]) == total["bytes"]
    assert saved["general_text"]["total"]["chunks"] == total["chunks"]
    assert "## Bits per byte on held-out general text by neighbour overlap" in markdown
    header = "| neighbour overlap | chunks | bytes | " + " | ".join(f"bpb, {s}" for s in settings) + " |"
    assert header in markdown
    cells = " | ".join(f"{total['bpb'][s]:.3f}" for s in settings)
    assert f"| all chunks | {total['chunks']} | {total['bytes']:,} | {cells} |" in markdown
    for row in general["buckets"]:
        assert f"| {row['bucket']} | {row['chunks']} | " in markdown
    assert "the documents added for evaluation): 0 of 3 by doc id, 0 of 3 by text." in markdown
    assert f"toy-retro: 0 of 3 by doc id, 0 of 3 by text (`{toy.index_dir}`)" in markdown
    # the same table over the bits-per-byte fact documents (copying): same settings, every document
    facts = results["fact_text"]
    assert facts["settings"] == settings and facts["not scored"] == general["not scored"]
    assert facts["documents"] == retro_entry["bpb"]["retrieval"]["n_documents"]
    assert sum(row["bytes"] for row in facts["buckets"]) == facts["total"]["bytes"]
    # every chunk's bits add up to the document-level bits per byte of the rows above
    assert facts["total"]["bpb"]["toy-retro, retrieval off"] == pytest.approx(
        retro_entry["bpb"]["off"]["bpb"]
    )
    assert "## Bits per byte on held-out fact documents by neighbour overlap (copying)" in markdown
    fact_cells = " | ".join(f"{facts['total']['bpb'][s]:.3f}" for s in settings)
    assert (
        f"| all chunks | {facts['total']['chunks']} | {facts['total']['bytes']:,} | {fact_cells} |"
        in markdown
    )


def test_validation_documents_are_decoded_back_from_the_index(toy):
    store = toy.retriever.store
    documents = validation_documents(store, 0.2, None)
    assert 0 < len(documents) < store.n_documents
    for document in documents:
        assert document.text == toy.all_texts[document.doc_id]
    assert len(validation_documents(store, 0.2, 3)) == 3


def test_eval_command_refuses_missing_folders(tmp_path):
    from service.cli import app

    result = CliRunner().invoke(
        app, ["eval", str(tmp_path / "nope"), "--index", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize("in_place", [False, True])
def test_evaluation_documents_go_to_a_scratch_copy_unless_in_place(toy, tmp_path, in_place):
    """`retro eval` must not grow the index it is given (a later training run on it would see the
    evaluation documents) unless asked to."""
    import shutil

    from index.store import IndexStore

    index_dir = tmp_path / "index"
    shutil.copytree(toy.index_dir, index_dir)
    before = IndexStore.open(index_dir, toy.tokenizer, toy.encoder).n_documents
    run = save_checkpoint(tmp_path / "toy-retro", toy.model, toy.tokenizer)
    new = [Document("toy/country/quorvia/p1", "Quorvia has its capital at Lindenmoor.", "toy")]
    results = run_evaluation(
        [run],
        index_dir,
        encoder=toy.encoder,
        fact_sets={"toy held-out": toy.pairs[:2]},
        extra_documents=new,
        bpb_documents=new,
        log=lambda s: None,
        in_place=in_place,
        max_general_docs=0,
    )
    assert results["index"]["documents added for evaluation"] == 1
    assert results["index"]["path"] == str(index_dir)
    after = IndexStore.open(index_dir, toy.tokenizer, toy.encoder).n_documents
    assert after == before + (1 if in_place else 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "toy-retro"]
    assert "general_text" not in results and "fact_text" not in results  # max_general_docs=0 skips both


def test_eval_command_writes_the_general_text_table(toy, tmp_path, monkeypatch):
    """`retro eval --general-source FILE --max-general-docs N` on a tiny index: the options reach
    the protocol and report.md holds the table (the toy's fact sets and encoder are passed in)."""
    import functools

    from service.cli import app
    from service.cli import eval as eval_module

    run = save_checkpoint(tmp_path / "toy-retro", toy.model, toy.tokenizer)
    source = tmp_path / "general.jsonl"
    source.write_text(
        "".join(json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in general_documents([]))
    )
    protocol = functools.partial(
        run_evaluation,
        encoder=toy.encoder,
        fact_sets={"toy held-out": toy.pairs[:1]},
        extra_documents=toy.heldout_docs,
        bpb_documents=toy.heldout_docs[:2],
    )
    monkeypatch.setattr(eval_module, "run_evaluation", protocol)
    out = tmp_path / "report"
    args = ["eval", str(run), "--index", str(toy.index_dir), "--out", str(out), "--device", "cpu"]
    args += ["--no-reading", "--general-source", str(source), "--max-general-docs", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / REPORT_JSON).read_text())
    assert saved["protocol"]["general_source"] == str(source)
    assert saved["general_text"]["documents"] == 2
    assert "| all chunks | " in (out / REPORT_MD).read_text()
    refused = CliRunner().invoke(app, [*args[:-1], "-1"])
    assert refused.exit_code == 2 and "--max-general-docs" in refused.output


def test_run_evaluation_generates_with_the_query_window_asked_for_or_the_models_own(
    toy, tmp_path, monkeypatch
):
    """`retro eval --query-tokens N` reaches the generations (it was recorded and not applied before
    2026-12-06); without it a model exported with `inference_query_tokens` is evaluated as served."""
    from index.retriever import Retriever

    searched: list[str] = []
    search = Retriever.search

    def spy(self, texts, k, exclude_doc_ids=None):
        searched.extend(texts)
        return search(self, texts, k, exclude_doc_ids)

    monkeypatch.setattr(Retriever, "search", spy)
    m = toy.model.config.chunk_size
    plain = save_checkpoint(tmp_path / "plain", toy.model, toy.tokenizer)
    wide_model = copy.deepcopy(toy.model)
    wide_model.config = wide_model.config.replace(inference_query_tokens=3 * m)
    wide = save_checkpoint(tmp_path / "wide", wide_model, toy.tokenizer)
    # a two-chunk prompt: its second chunk's query holds the first chunk too when widened
    pair = toy.pairs[0]
    long_pair = type(pair)(**{**pair.__dict__, "completion": "Of all the places we know, " + pair.completion})

    def evaluated(run, **kw) -> tuple[int, set[str]]:
        searched.clear()
        results = run_evaluation([run], toy.index_dir, encoder=toy.encoder, fact_sets={"one": [long_pair]},
                                 extra_documents=[], bpb_documents=[], log=lambda s: None, reading_items=[],
                                 max_general_docs=0, **kw)  # fmt: skip
        (entry,) = results["models"].values()
        return entry["query_tokens"], set(searched)

    ids = toy.tokenizer.encode(long_pair.completion)
    assert len(ids) > m  # the prompt spans chunks
    own_tokens, own_texts = evaluated(plain)
    asked_tokens, asked_texts = evaluated(plain, query_tokens=3 * m)
    served_tokens, served_texts = evaluated(wide)
    assert (own_tokens, asked_tokens, served_tokens) == (m, 3 * m, 3 * m)
    assert asked_texts == served_texts and asked_texts != own_texts
    assert max(map(len, asked_texts)) > max(map(len, own_texts))


def evaluated_answers(toy, tmp_path, model, name: str, setting: str | None = None) -> tuple[dict, list[str]]:
    """`run_evaluation` of `model` saved as run `name` on the toy facts: (results, the fact answers
    of one setting, or of every setting when None)."""
    run = save_checkpoint(tmp_path / name, model, toy.tokenizer)
    results = run_evaluation([run], toy.index_dir, encoder=toy.encoder, fact_sets={"one": toy.pairs},
                             extra_documents=[], bpb_documents=[], log=lambda s: None, reading_items=[],
                             max_general_docs=0)  # fmt: skip
    (entry,) = results["models"].values()
    settings = entry["facts"]["one"]
    chosen = [settings[setting]] if setting is not None else list(settings.values())
    return results, [row["generated"] for one in chosen for row in one.get("answers", [])]


def test_run_evaluation_generates_with_the_models_first_copy_bias(toy, tmp_path):
    """A model exported with `--first-copy-bias` is evaluated as served: its answers' first tokens
    are drawn with the copy head's null slot lowered (retro.generate), and the report says so."""
    sure = copy.deepcopy(toy.model)  # sure of its vocabulary: without the bias it copies little
    with torch.no_grad():
        sure.copy_head.null.bias.fill_(10.0)
    biased = copy.deepcopy(sure)
    biased.config = sure.config.replace(inference_first_copy_bias=60.0)

    sure_results, sure_answers = evaluated_answers(toy, tmp_path, sure, "sure", "completion, retrieval on")
    biased_results, biased_answers = evaluated_answers(
        toy, tmp_path, biased, "biased", "completion, retrieval on"
    )
    assert "first_copy_bias" not in sure_results["models"]["sure"]
    assert biased_results["models"]["biased"]["first_copy_bias"] == 60.0
    assert biased_answers != sure_answers
    assert "| first token's copy bias (nats) | 60.000 |" in markdown(biased_results)
    assert "copy bias" not in markdown(sure_results)


def test_run_evaluation_generates_with_the_models_first_candidates(toy, tmp_path):
    """A model exported with `--first-candidates` is evaluated as served: each answer's first token
    is the lookahead's choice among the top N (retro.first_token), and the report says so."""
    looking = copy.deepcopy(toy.model)
    looking.config = toy.model.config.replace(inference_first_candidates=5)

    plain_results, plain_answers = evaluated_answers(toy, tmp_path, toy.model, "plain")
    looking_results, looking_answers = evaluated_answers(toy, tmp_path, looking, "looking")
    assert "first_candidates" not in plain_results["models"]["plain"]
    assert looking_results["models"]["looking"]["first_candidates"] == 5
    assert looking_answers != plain_answers
    assert "| first token: candidates weighed by lookahead | 5 |" in markdown(looking_results)
    assert "lookahead" not in markdown(plain_results)


def test_run_evaluation_reads_with_the_span_reader_stored_beside_the_model(toy, tmp_path):
    """A folder with a span reader (retro.span_reader) and a weight in its config is evaluated as
    served: the reader's bias moves first tokens, and the report names the reader and its size."""
    from retro.span_reader import FILE, SpanReader

    torch.manual_seed(0)
    reader = SpanReader(rank=2)
    with torch.no_grad():  # a reader with opinions: its head and adapters away from their start
        for name, p in reader.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05 if name.endswith(".b") else 1.0)
    weighted = copy.deepcopy(toy.model)
    weighted.config = toy.model.config.replace(
        inference_span_weight=20.0, inference_span_floor=-10.0, inference_span_follow=4.0
    )
    reader.save(tmp_path / FILE)
    plain_results, plain_answers = evaluated_answers(toy, tmp_path, weighted, "plain")  # no reader file
    run = save_checkpoint(tmp_path / "read", weighted, toy.tokenizer, extra_files=[tmp_path / FILE])
    results = run_evaluation([run], toy.index_dir, encoder=toy.encoder, fact_sets={"one": toy.pairs},
                             extra_documents=[], bpb_documents=[], log=lambda s: None, reading_items=[],
                             max_general_docs=0)  # fmt: skip
    entry = results["models"]["read"]
    answers = [row["generated"] for one in entry["facts"]["one"].values() for row in one.get("answers", [])]
    assert "span_reader" not in plain_results["models"]["plain"]
    assert entry["span_reader"]["weight"] == 20.0 and entry["span_reader"]["parameters_frozen"] > 20_000_000
    assert answers != plain_answers
    assert "| first token: span reader | weight 20, floor -10, follow 4;" in markdown(results)
