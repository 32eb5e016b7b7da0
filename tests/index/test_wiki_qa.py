"""Questions over real passages for training: facts read from a lead's sentences about its own
subject, asked and answered with the lead's own words, read as reading documents (`wiki-qa/`), and
never in a held-out wording of the reading set."""

import random
import re

from index.corpus import Document
from index.reading_world import KINDS
from index.sources import NAMED_SOURCES
from index.wiki_qa import WORDINGS, Fact, check_question, lead_documents, lead_facts, render, split_sentences

OBSERVATORY = Document(
    "wiki/Velmar Observatory",
    "The Velmar Observatory (Polish: Obserwatorium) is a small astronomical observatory on the northern "
    "plateau, which is run by volunteers. It was founded in 1911 by Anselm Korda. The observatory was "
    "built in Dravik. Its largest telescope is Old Lantern. The lake is cold.",
    title="Velmar Observatory",
)
PAINTER = Document(
    "wiki/Ines Marrow",
    "Ines Marrow was an Estonian painter, who worked in Tallinn. She was born in Tartu. Marrow died in 1931.",
    title="Ines Marrow",
)


def _facts(doc):
    subject, person, facts = lead_facts(doc.title, doc.text)
    return subject, person, {(f.kind, f.answer) for f in facts}


def test_parentheticals_are_dropped_and_sentences_split():
    assert split_sentences(OBSERVATORY.text)[:2] == [
        "The Velmar Observatory is a small astronomical observatory on the northern plateau, which is "
        "run by volunteers.",
        "It was founded in 1911 by Anselm Korda.",
    ]


def test_facts_about_the_subject_are_read_from_every_way_the_lead_names_it():
    subject, person, facts = _facts(OBSERVATORY)
    assert subject == "The Velmar Observatory" and not person
    assert facts == {
        ("definition", "a small astronomical observatory on the northern plateau"),  # cut at the clause
        ("when", "1911"),  # "It was founded in 1911 ..."
        ("by", "Anselm Korda"),
        ("where", "Dravik"),  # "The observatory was built in Dravik": a noun after the first sentence
        ("possessed", "Old Lantern"),  # "Its largest telescope is Old Lantern."
    }
    subject, person, facts = _facts(PAINTER)
    assert subject == "Ines Marrow" and person  # "She" after the first sentence
    assert facts >= {("nationality", "Estonian"), ("where", "Tartu"), ("died_when", "1931")}  # "Marrow died"


def test_a_nationality_is_read_for_people_only_and_a_date_keeps_its_preposition():
    order = Document(
        "wiki/Velmar Order",
        "The Velmar Order is a Catholic religious order. It was founded on 4 May 1190.",
        title="Velmar Order",
    )
    _, person, facts = _facts(order)
    assert not person and facts == {("when", "4 May 1190")}  # not "nationality: Catholic"
    docs = lead_documents(order)
    # a completion ends in the lead's own preposition: "... was founded on", never "... founded in 4 May"
    assert docs and all("founded in 4 May" not in d.text for d in docs)
    fact = Fact("when", "4 May 1190", r="on", p="built")  # ("{e} was founded" is a held-out wording's)
    rendered = {render(fact, "The Velmar Order", False, random.Random(seed)) for seed in range(50)}
    assert "The Velmar Order was built on 4 May 1190." in rendered
    assert not any("built in 4 May" in q for q in rendered)


def test_a_lead_that_does_not_open_with_its_subject_gives_nothing():
    doc = Document(
        "wiki/Velmar Observatory",
        "On the plateau stands an observatory. It was founded in 1911.",
        title="Velmar Observatory",
    )
    assert lead_facts(doc.title, doc.text)[2] == [] and lead_documents(doc) == []


def test_documents_ask_each_fact_once_with_its_answer_after_the_question():
    docs = lead_documents(OBSERVATORY)
    assert [d.doc_id for d in docs] == ["wiki-qa/Velmar Observatory/q0", "wiki-qa/Velmar Observatory/q1"]
    assert "wiki-qa:train" in NAMED_SOURCES
    for doc in docs:
        assert doc.title == "Velmar Observatory" and doc.source == "wiki-qa"
        for answer in ("1911", "Anselm Korda", "Dravik", "Old Lantern"):
            # a question (or a completion) right before the answer, then a full stop
            assert len(re.findall(rf"[?:.a-z] {re.escape(answer)}\.", doc.text)) == 1, (answer, doc.text)
        assert (
            "Who founded the Velmar Observatory?" in doc.text
            or "Velmar Observatory was founded by" in doc.text
            or (
                re.search(
                    r"(?:By whom|Who) was the Velmar Observatory founded(?: by)?\? Anselm Korda\.", doc.text
                )
            )
        ), doc.text


def test_no_question_says_what_a_held_out_wording_of_the_reading_set_says():
    for kind in KINDS:
        for rel in kind.relations:
            for wording in rel.held_out_wordings:
                assert not check_question(wording.format(e="Velmar"), "Velmar"), wording
    fact = Fact("when", "1911", p="founded")
    rendered = {render(fact, "Velmar", False, random.Random(seed)) for seed in range(50)}
    # "{e} was founded in" is a held-out wording's start ("... was founded in what year?"): never drawn
    assert rendered and None not in rendered
    assert "Velmar was founded in 1911." not in rendered
    allowed = {w.format(s="Velmar", S="Velmar", p="founded", r="in") + " 1911." for w in WORDINGS["when"]}
    assert rendered <= allowed
