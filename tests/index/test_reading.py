"""The reading set: deterministic, split by entity, held-out styles and question forms never trained on."""

import re

import pytest

from index import reading
from index.reading_world import HELDOUT_QUESTION_FORMS, KINDS


@pytest.fixture(scope="module")
def train_docs():
    return reading.training_documents(("passages", "qa", "qa-forms", "chat"))


@pytest.fixture(scope="module")
def test_set():
    return reading.evaluation_set("test")


def test_the_same_seed_gives_the_same_set(train_docs):
    again = reading.training_documents(("passages", "qa", "qa-forms", "chat"))
    assert [(d.doc_id, d.text) for d in again] == [(d.doc_id, d.text) for d in train_docs]
    assert reading.evaluation_set("test").items == reading.evaluation_set("test").items


def test_no_evaluation_entity_is_named_in_training(train_docs, test_set):
    """Every invented word is drawn once, so an evaluation entity's name stem never occurs in training."""
    words = set(re.findall(r"\w+", "\n".join(d.text for d in train_docs)))
    common = {"Works", "and", "Sons", "Trading", "Mills", "Foundry", "beetle", "moth", "weevil"}
    for split in ("dev", "test"):
        for entity in reading.world()[split]:
            invented = set(entity.name.split()) - common
            assert not invented & words, f"{split} entity {entity.name} is named in a training document"


def test_training_uses_only_training_families_and_question_forms(train_docs):
    families = {d.doc_id.rsplit("/", 1)[1] for d in train_docs if d.doc_id.startswith("reading/")}
    assert families == set(reading.TRAIN_FAMILIES)
    text = "\n".join(d.text for d in train_docs)
    # the held-out families' marks: dialogue turns, letters, pipe-separated records
    assert not re.search(r"^\w+: Have you heard of", text, re.M)
    assert "Dear " not in text and " | " not in text
    for kind in KINDS:
        for relation in kind.relations:
            for form in HELDOUT_QUESTION_FORMS:
                stem = relation.questions[form].split("{e}")
                probe = max(stem, key=len).strip()
                if len(probe) > 12:  # long enough to be this form's own wording
                    assert probe not in text, (
                        f"held-out question form {relation.questions[form]!r} was trained on"
                    )


def test_every_item_is_answerable_from_its_evidence_only(test_set):
    texts = {d.doc_id: d.text for d in test_set.documents}
    for item in test_set.items:
        for doc_id in item.evidence:
            assert item.answer in texts[doc_id], item
        if item.kind == "prefix":
            # a word-for-word prefix of the passage, ending right before the answer
            assert texts[item.evidence[0]].startswith(item.prompt + " " + item.answer), item
        if item.kind in ("question", "reworded", "long", "lookalike", "update"):
            assert item.answer not in item.prompt


def test_held_out_items_use_held_out_families_and_forms(test_set):
    kinds = {i.kind for i in test_set.items}
    assert kinds == set(reading.ITEM_KINDS)
    for item in test_set.items:
        if item.kind in ("question", "prefix", "reworded", "long", "question_trained_form"):
            assert item.family in reading.HELDOUT_FAMILIES
        if item.kind in ("question", "long", "lookalike", "update"):
            assert int(item.form.removeprefix("q")) in HELDOUT_QUESTION_FORMS


def test_reworded_prompts_are_not_in_the_passage(test_set):
    texts = {d.doc_id: d.text for d in test_set.documents}
    for item in test_set.items:
        if item.kind == "reworded":
            assert item.prompt not in texts[item.evidence[0]]


def test_lookalikes_and_updates_carry_the_other_value(test_set):
    texts = {d.doc_id: d.text for d in test_set.documents}
    for item in test_set.items:
        if item.kind == "lookalike":
            assert item.other_answer and item.other_answer != item.answer
            assert item.other_answer in texts[item.evidence[0]]  # both values in one passage
        if item.kind == "update":
            assert item.other_answer != item.answer
            assert item.other_answer in texts[item.other_evidence[0]]
            assert item.other_evidence[0] in test_set.removed_for_update


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown reading split"):
        reading.reading_documents("heldout")


def test_the_form_rounds_ask_every_relation_in_every_training_form(train_docs):
    entity = reading.world()["train"][0]
    rounds = [d.text for d in train_docs if d.doc_id.startswith(f"reading-qa/{entity.key[8:]}/form")]
    assert len(rounds) == 3
    text = " ".join(rounds)
    for relation in reading.KIND_BY_NAME[entity.kind].relations:
        for form in (0, 1, 2):
            assert relation.questions[form].format(e=entity.name) + f" {entity.facts[relation.name]}." in text


def test_training_conversations_are_chats_in_the_served_template(train_docs):
    """`reading-chat:train` is what `/v1/chat/completions` renders for a system message and
    question/answer turns in the training forms: one conversation per document, answer last."""
    from retro.chat_template import ChatTurn, render_conversation

    chats = [d for d in train_docs if d.source == "reading-chat"]
    assert len(chats) == len(reading.world()["train"])
    entity = reading.world()["train"][0]
    chat = next(d for d in chats if d.doc_id == f"reading-chat/{entity.key[8:]}")
    system = next(p for p in reading.TRAIN_SYSTEM_PROMPTS if chat.text.startswith(p))
    rest = chat.text[len(system) + 1 :]
    questions = [r.questions[f].format(e=entity.name) for r in reading.KIND_BY_NAME[entity.kind].relations
                 for f in (0, 1, 2)]  # fmt: skip
    turns = [ChatTurn("system", system)]
    while rest:
        question = next(q for q in questions if rest.startswith(q))
        rest = rest[len(question) + 1 :]
        answer, _, rest = rest.partition(". ")
        turns += [ChatTurn("user", question), ChatTurn("assistant", answer.removesuffix(".") + ".")]
    assert 3 <= len(turns) <= 7 and render_conversation(turns) == chat.text
