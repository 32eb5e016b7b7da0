"""Corpus readers: folders, .jsonl, dictd dictionaries, wiki-vital, facts; bad inputs are reported."""

from __future__ import annotations

import gzip
import json

import pytest

from index import facts
from index.corpus import Document, SkippedInput
from index.sources import check_sources, read_source, read_sources


def _read(source) -> tuple[list[Document], list[SkippedInput]]:
    skipped: list[SkippedInput] = []
    return list(read_source(str(source), skipped)), skipped


def test_folder_reads_text_recursively_and_reports_bad_files(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (corpus / "sub" / "b.md").write_text("# Beta\nwith émoji 🎉", encoding="utf-8")
    (corpus / "binary.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (corpus / "latin1.txt").write_bytes("café".encode("latin-1"))
    (corpus / "empty.md").write_text("  \n", encoding="utf-8")
    (corpus / "ignored.csv").write_text("x,y", encoding="utf-8")

    documents, skipped = _read(corpus)

    assert [d.doc_id for d in documents] == ["corpus/a.txt", "corpus/sub/b.md"]
    assert documents[1].text == "# Beta\nwith émoji 🎉" and documents[1].title == "b"
    reasons = {s.where.rsplit("/", 1)[-1]: s.reason for s in skipped}
    assert reasons["binary.txt"] == "binary"
    assert reasons["latin1.txt"].startswith("invalid UTF-8")
    assert reasons["empty.md"] == "empty"
    assert len(skipped) == 3


def test_jsonl_reads_ids_titles_and_skips_bad_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": "x1", "text": "First.", "title": "One"}),
        json.dumps({"text": "Second, no id."}),
        "{not json",
        json.dumps({"body": "no text field"}),
        json.dumps({"text": "   "}),
        "",
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe\n")

    documents, skipped = _read(path)

    assert [(d.doc_id, d.title) for d in documents] == [("x1", "One"), ("docs/2", None)]
    assert [s.reason.split(":")[0] for s in skipped] == [
        "invalid JSON",
        "no string field 'text'",
        "empty",
        "invalid UTF-8 at byte 0",
    ]
    assert skipped[0].where.endswith("docs.jsonl:3")


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown source .*wiki-vital"):
        list(read_sources([str(tmp_path / "nope")], []))
    with pytest.raises(ValueError, match="unknown source"):
        check_sources(["no-such-named-source"])


def _b64(number: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        digits = alphabet[number % 64] + digits
        number //= 64
        if not number:
            return digits


def test_dictd_reader_on_a_tiny_dictionary(tmp_path, monkeypatch):
    entries = [
        ("00-database-info", "This is a test dictionary.\n"),
        ("byte", "byte\n\n   Eight bits, usually.\n"),
        ("kludge", "kludge\n\n   A clumsy but working solution.\n"),
        ("broken", "\x00\x01 binary junk"),
    ]
    body, index_lines = b"", []
    for headword, text in entries:
        data = text.encode("utf-8")
        index_lines.append(f"{headword}\t{_b64(len(body))}\t{_b64(len(data))}")
        body += data
    index_lines.append(f"octet\t{_b64(len(entries[0][1]))}\t{_b64(len(entries[1][1]))}")  # alias of "byte"
    (tmp_path / "foldoc.index").write_text("\n".join(index_lines) + "\n", encoding="utf-8")
    (tmp_path / "foldoc.dict.dz").write_bytes(gzip.compress(body))
    monkeypatch.setenv("RETRO_DICTD_DIR", str(tmp_path))

    documents, skipped = _read("foldoc")

    assert [d.doc_id for d in documents] == ["foldoc/byte", "foldoc/kludge"]
    assert "Eight bits" in documents[0].text and documents[0].source == "foldoc"
    assert [(s.where, s.reason) for s in skipped] == [("foldoc/broken", "binary")]


def test_dictd_source_not_installed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRO_DICTD_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"apt-get install dict-wn"):
        _read("wordnet")
    with pytest.raises(ValueError, match=r"apt-get install dict-jargon"):
        check_sources(["jargon"])


def test_wiki_vital_reads_the_package_data_file():
    documents, skipped = _read("wiki-vital")
    assert len(documents) > 9000
    assert len({d.doc_id for d in documents}) == len(documents)
    assert all(d.doc_id.startswith("wiki/") and d.text.strip() for d in documents[:100])


def test_fact_documents_three_phrasings_with_stable_ids():
    documents, _ = _read("facts")
    by_id = {d.doc_id: d for d in documents}
    assert {"facts/country/france/p1", "facts/country/france/p2", "facts/country/france/p3"} <= set(by_id)
    assert "The capital of France is Paris." in by_id["facts/country/france/p2"].text
    assert all("Paris" in by_id[f"facts/country/france/p{i}"].text for i in (1, 2, 3))
    assert "The chemical symbol of Oxygen is O." in by_id["facts/element/oxygen/p2"].text
    assert len(documents) == 3 * len(facts.entities())
    assert [d.doc_id for d in documents] == [d.doc_id for d in _read("facts")[0]]


def test_fact_split_is_deterministic_disjoint_and_about_a_fifth():
    train = {d.doc_id for d in facts.fact_documents("train")}
    heldout = {d.doc_id for d in facts.fact_documents("heldout")}
    everything = {d.doc_id for d in facts.fact_documents("all")}
    assert train.isdisjoint(heldout) and train | heldout == everything
    held_entities = facts.heldout_entities()
    assert 0.1 < len(held_entities) / len(facts.entities()) < 0.3
    assert held_entities == facts.heldout_entities()
    assert {d.rsplit("/", 1)[0].removeprefix("facts/") for d in heldout} == held_entities
    with pytest.raises(ValueError, match="unknown facts split"):
        list(facts.fact_documents("validation"))


def test_heldout_entities_halve_into_dev_and_test_and_twins_split_together():
    heldout = {d.doc_id for d in facts.fact_documents("heldout")}
    dev = {d.doc_id for d in facts.fact_documents("dev")}
    test = {d.doc_id for d in facts.fact_documents("test")}
    assert dev and test and dev.isdisjoint(test) and dev | test == heldout
    keys = {e.name: e.key for e in facts.entities()}
    for first, second in facts.TWINS:
        if first in keys and second in keys:
            assert facts.is_heldout(keys[first]) == facts.is_heldout(keys[second]), (first, second)
            assert facts.heldout_part(keys[first]) == facts.heldout_part(keys[second])


def test_wiki_vital_train_drops_the_heldout_entities_own_leads():
    from index.leakage import heldout_title_pattern, without_heldout_leads

    held_names = [e.name for e in facts.entities() if facts.is_heldout(e.key)]
    docs = [
        Document(f"wiki/{title}", "text", title=title)
        for title in (
            held_names[0],
            f"History of {held_names[1]}",
            "Photosynthesis",
            f"{held_names[0]}ese food",
        )
    ]
    kept = [d.title for d in without_heldout_leads(docs)]
    # whole words only: "Xese food" is not about X
    assert kept == ["Photosynthesis", f"{held_names[0]}ese food"]
    assert heldout_title_pattern().search(held_names[2])


def test_wiki_vital_heldout_is_what_train_drops_halved_like_the_facts():
    """The general text `retro eval` scores: never in `wiki-vital:train`, each lead in the part
    (dev or test) of the held-out entity its title names."""
    from index.leakage import heldout_lead_part

    everything = {d.doc_id for d in _read("wiki-vital")[0]}
    train = {d.doc_id for d in _read("wiki-vital:train")[0]}
    heldout = _read("wiki-vital:heldout")[0]
    held = {d.doc_id for d in heldout}
    dev, test = ({d.doc_id for d in _read(f"wiki-vital:{part}")[0]} for part in ("dev", "test"))
    assert held and held.isdisjoint(train) and held | train == everything
    assert dev and test and dev.isdisjoint(test) and dev | test == held
    keys = {e.name: e.key for e in facts.entities() if facts.is_heldout(e.key)}
    for document in heldout:
        part = "dev" if document.doc_id in dev else "test"
        if document.title in keys:  # the entity's own lead
            assert facts.heldout_part(keys[document.title]) == part
    name = next(iter(keys))
    assert heldout_lead_part(f"History of {name}") == facts.heldout_part(keys[name])
    assert heldout_lead_part("Photosynthesis") is None


def test_fact_pairs_answers_appear_in_the_documents():
    pairs = list(facts.fact_pairs())
    assert len(pairs) >= 1000
    held = list(facts.fact_pairs("heldout"))
    assert held and {p.entity for p in held} <= facts.heldout_entities()
    texts = {d.doc_id: d.text for d in facts.fact_documents()}
    for pair in pairs[::37]:
        assert f"{pair.completion} {pair.answer}" in texts[f"facts/{pair.entity}/p2"]
        assert pair.question.endswith("?")
    france = [p for p in pairs if p.entity == "country/france"]
    assert ("The capital of France is", "Paris") in [(p.completion, p.answer) for p in france]


def test_question_and_answer_documents_follow_the_fact_split():
    documents, _ = _read("facts-qa")
    by_id = {d.doc_id: d for d in documents}
    france = by_id["facts-qa/country/france"].text
    assert france.startswith("France: questions and answers. ")
    assert "What is the capital of France? Paris." in france
    assert "Who discovered Oxygen? " in by_id["facts-qa/element/oxygen"].text
    train = {d.doc_id for d in facts.qa_documents("train")}
    heldout = {d.doc_id for d in facts.qa_documents("heldout")}
    assert train.isdisjoint(heldout) and train | heldout == set(by_id)
    assert heldout == {f"facts-qa/{key}" for key in facts.heldout_entities()} & set(by_id)
    # every held-out question's answer follows it in that entity's document
    for pair in facts.fact_pairs("heldout"):
        assert f"{pair.question} {pair.answer}." in by_id[f"facts-qa/{pair.entity}"].text
