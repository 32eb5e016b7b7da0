"""The reworded statements for training: every relation said in words its passage sentence never
uses, never a held-out question form's or reworded prompt's wording, about training entities only."""

import pytest

from index.reading import world
from index.reading_reworded import TRAIN_REWORDED, check_reworded, documents, statements
from index.reading_world import HELDOUT_QUESTION_FORMS, KINDS
from index.sources import NAMED_SOURCES


@pytest.fixture(scope="module")
def docs():
    return documents()


def test_every_relation_has_checked_statements():
    for kind in KINDS:
        for rel in kind.relations:
            assert len(statements(kind.name, rel.name)) >= 4
    assert set(TRAIN_REWORDED) == {(k.name, r.name) for k in KINDS for r in k.relations}


def test_check_reworded_refuses_passage_words_and_held_out_wordings():
    born = next(r for r in KINDS[0].relations if r.name == "born")  # "{e} was born in {v}."
    with pytest.raises(ValueError, match="passage sentence"):
        check_reworded("Records say {e} was born in", born)
    for held in born.reworded:  # the evaluation's own reworded prompts
        with pytest.raises(ValueError, match="held-out wording"):
            check_reworded(held, born)
    for f in HELDOUT_QUESTION_FORMS:
        with pytest.raises(ValueError):
            check_reworded(born.questions[f].rstrip("?."), born)
    with pytest.raises(ValueError, match="end in a word"):
        check_reworded("The life of {e} began:", born)
    check_reworded("The life of {e} began in the year", born)


def test_no_document_says_a_held_out_wording_or_names_an_evaluation_entity(docs):
    by_name = {e.name: e for e in world()["train"]}
    kinds = {k.name: k for k in KINDS}
    for doc in docs:
        entity = by_name[doc.title]
        for rel in kinds[entity.kind].relations:
            for held in rel.held_out_wordings:
                assert held.rstrip("?.").format(e=entity.name) not in doc.text, (doc.doc_id, held)
            assert rel.sentence.split("{v}")[0].format(e=entity.name) not in doc.text
    titles = {d.title for d in docs}
    for split in ("dev", "test"):
        assert not titles & {e.name for e in world()[split]}


def test_documents_state_every_fact_under_the_reading_prefix(docs):
    by_name = {e.name: e for e in world()["train"]}
    assert len(docs) == 4 * len(by_name)
    assert len({d.doc_id for d in docs}) == len(docs)
    for doc in docs:
        assert doc.doc_id.startswith("reading-qa/") and "/rew" in doc.doc_id
        entity = by_name[doc.title]
        for value in entity.facts.values():
            assert f" {value}." in doc.text
    assert "reading-rew:train" in NAMED_SOURCES
    assert [d.text for d in documents()[:8]] == [d.text for d in docs[:8]]  # one seed, one text
