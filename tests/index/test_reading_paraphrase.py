"""The question paraphrases for training: they widen the trained wordings without ever saying a
held-out question form or reworded prompt, and they state each entity's own facts."""

import pytest

from index.reading import world
from index.reading_paraphrase import check_template, documents, templates
from index.reading_world import HELDOUT_QUESTION_FORMS, KINDS, TRAIN_QUESTION_FORMS
from index.sources import NAMED_SOURCES


@pytest.fixture(scope="module")
def docs():
    return documents()


def test_no_document_says_a_held_out_wording(docs):
    by_name = {e.name: e for e in world()["train"]}
    kinds = {k.name: k for k in KINDS}
    for doc in docs:
        entity = by_name[doc.title]
        for rel in kinds[entity.kind].relations:
            for held in rel.held_out_wordings:
                assert held.format(e=entity.name) not in doc.text, (doc.doc_id, held)


def test_documents_state_the_entitys_facts_under_the_reading_prefixes(docs):
    by_name = {e.name: e for e in world()["train"]}
    assert len(docs) == 4 * len(by_name)
    for doc in docs:
        assert doc.doc_id.startswith(("reading-qa/", "reading-chat/"))
        entity = by_name[doc.title]
        if doc.doc_id.startswith("reading-qa/"):  # every relation asked once, answered with its value
            for value in entity.facts.values():
                assert f" {value}." in doc.text
    assert "reading-qa-para:train" in NAMED_SOURCES
    assert [d.text for d in documents()[:8]] == [d.text for d in docs[:8]]  # one seed, one text


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_relation_gets_new_structures(kind):
    for rel in kind.relations:
        bare = [variants[0] for variants in templates(kind.name, rel.name)]
        assert [rel.questions[f] for f in TRAIN_QUESTION_FORMS] == bare[:3]
        assert any(t.endswith(".") for t in bare), "an imperative that ends in a full stop"
        assert any(t.startswith("{e}:") for t in bare), "a terse record question"
        assert len({t for variants in templates(kind.name, rel.name) for t in variants}) >= 60


def test_check_template_refuses_held_out_wordings():
    rel = next(r for r in KINDS[0].relations if r.name == "mentor")  # person: "Name the mentor of {e}."
    for f in HELDOUT_QUESTION_FORMS:
        with pytest.raises(ValueError, match="held-out wording"):
            check_template(rel.questions[f], rel)
    mayor = next(r for r in KINDS[1].relations if r.name == "mayor")  # town: "Name the mayor of {e}."
    with pytest.raises(ValueError, match="another first word"):
        check_template("State the mayor of {e}.", mayor)
    with pytest.raises(ValueError, match="shares"):
        check_template("Quick question: {e} learned from whom?", rel)
    for f in TRAIN_QUESTION_FORMS:
        check_template(rel.questions[f], rel)  # the training forms themselves pass
