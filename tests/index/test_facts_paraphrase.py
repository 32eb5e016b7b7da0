"""The real-fact paraphrases for training: training entities only, every relation of an entity in
each document with its own value, read as question-and-answer documents (`facts-qa/`)."""

import re

import pytest

from index.facts import entities_of
from index.facts_paraphrase import DOCS_PER_ENTITY, WORDINGS, documents, entity_qa_documents
from index.sources import NAMED_SOURCES


@pytest.fixture(scope="module")
def docs():
    return documents()


def test_only_training_entities_are_rendered(docs):
    train = {e.name for e in entities_of("train")}
    held = {e.name for e in entities_of("heldout")}
    assert held and not train & held
    assert {d.title for d in docs} == {e.name for e in entities_of("train") if set(e.facts) & set(WORDINGS)}
    assert len(docs) == DOCS_PER_ENTITY * len({d.title for d in docs})


def test_every_relation_is_asked_once_and_answered_with_its_own_value(docs):
    entity = next(
        e for e in entities_of("train") if e.kind == "country" and {"capital", "area"} <= set(e.facts)
    )
    for doc in entity_qa_documents(entity):
        assert doc.doc_id.startswith(f"facts-qa/{entity.key}/para")  # Recipe.read_prefix=facts-qa/ reads it
        for relation, value in entity.facts.items():
            answer = f"{value} square kilometres" if relation == "area" else value
            asked = [w.format(n=entity.name) for w in WORDINGS[relation]]
            # the wording, then (after an optional lead-in's words) the value and a full stop
            pattern = "|".join(re.escape(a) for a in asked)
            assert len(re.findall(rf"(?:{pattern}) {re.escape(answer)}\.", doc.text)) == 1, (
                relation,
                doc.text,
            )


def test_named_source_and_one_seed_one_text(docs):
    assert "facts-qa-para:train" in NAMED_SOURCES
    assert [d.text for d in documents()[:12]] == [d.text for d in docs[:12]]
    assert len({d.text for d in docs}) > 0.9 * len(docs)  # the wordings vary between an entity's documents
