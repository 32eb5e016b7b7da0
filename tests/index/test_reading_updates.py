"""The update training material: a notice that changes one fact, questions answered by the notice,
and none of the evaluation's update wordings, names or question forms."""

import re

import pytest

from index.reading import evaluation_set, world
from index.reading_updates import EVALUATION_NOTICE_WORDS, NOTICES, documents, notice, updates
from index.reading_world import HELDOUT_QUESTION_FORMS, TRAIN_QUESTION_FORMS
from index.sources import NAMED_SOURCES
from tests.index.wording import trigrams


@pytest.fixture(scope="module")
def docs():
    return {d.doc_id: d for d in documents(("passages", "qa"))}


def test_notices_share_no_word_trigram_with_the_evaluation_notices():
    evaluation = set().union(*(trigrams(t) for t in EVALUATION_NOTICE_WORDS))
    # the evaluation's wordings as evaluation_set renders them (so EVALUATION_NOTICE_WORDS is not stale)
    rendered = " ".join(d.text for d in evaluation_set("dev").documents if d.doc_id.endswith("/update"))
    assert "Earlier sources were wrong." in rendered and "new records show that" in rendered
    for template in NOTICES:
        assert not trigrams(template) & evaluation, template
    assert all("2026" not in d.text for d in documents(("passages",)) if d.doc_id.endswith("/notice"))


def test_the_questions_take_the_notices_value_and_the_passage_keeps_the_old(docs):
    for entity, _relations, changed, new_value in updates()[:60]:
        slug = entity.key.removeprefix("reading/")
        old_value = entity.facts[changed.name]
        assert new_value != old_value
        passage = next(
            d for i, d in docs.items() if i.startswith(f"reading-upd/{slug}/") and "notice" not in i
        )
        note = docs[f"reading-upd/{slug}/notice"]
        qa, chat = docs[f"reading-qa/upd/{slug}"], docs[f"reading-chat/upd/{slug}"]
        assert old_value in passage.text and new_value in note.text and old_value not in note.text
        asked = [changed.questions[f].format(e=entity.name) for f in TRAIN_QUESTION_FORMS]
        answered = re.findall(
            "(?:" + "|".join(re.escape(q) for q in asked) + r") ([^.?]+)\.", qa.text + " " + chat.text
        )
        assert answered and set(answered) == {new_value}, (answered, new_value)


def test_only_training_forms_no_evaluation_names_and_read_prefixed_questions(docs):
    questions = " ".join(d.text for d in docs.values() if d.source == "reading-upd-qa")
    for entity, relations, _changed, _new in updates()[:60]:
        for rel in relations[:4]:  # the kind's own relations have held-out forms of their own
            for f in HELDOUT_QUESTION_FORMS:
                assert rel.questions[f].format(e=entity.name) not in questions
    invented = set()
    for split in ("dev", "test"):
        for e in world()[split]:
            invented.update(re.findall(r"[A-Z][a-z]+", e.name))
    invented -= {"Works", "Trading", "Mills", "Foundry", "Sons"}
    words = set(re.findall(r"[A-Za-z]+", " ".join(d.text for d in docs.values())))
    assert invented and not invented & words
    for d in docs.values():
        is_qa = d.doc_id.startswith(("reading-qa/", "reading-chat/"))
        assert is_qa == (d.source == "reading-upd-qa"), d.doc_id
    assert {"reading-upd:train", "reading-upd-qa:train"} <= set(NAMED_SOURCES)


def test_the_material_is_a_pure_function_of_its_seed():
    import random

    entity, _relations, changed, value = updates()[0]
    assert notice(entity, changed, value, random.Random(1)) == notice(
        entity, changed, value, random.Random(1)
    )
    first = [(d.doc_id, d.text) for d in documents(("passages", "qa"))]
    updates.cache_clear()
    assert [(d.doc_id, d.text) for d in documents(("passages", "qa"))] == first
