"""The span reader's training examples (`index.span_examples`): answers where they say, and nothing
held out: no held-out style family, question form, reworded prompt, or dev / test entity; the
completions are what a prefix or a completion asks; the updates put the new value in the notice."""

import random

from index.reading import HELDOUT_FAMILIES, TRAIN_FAMILIES, evaluation_set, passage, world
from index.reading_updates import updates
from index.reading_world import HELDOUT_QUESTION_FORMS, KIND_BY_NAME
from index.span_examples import (
    NO_ANSWER_SHARE,
    completion_examples,
    fact_examples,
    reading_examples,
    update_examples,
)


def test_reading_examples_answer_where_they_say_and_hold_nothing_held_out():
    examples = list(reading_examples(random.Random(5)))
    train = world()["train"]
    training_passages = {passage(e, f).text for e in train[:400] for f in TRAIN_FAMILIES}
    held_passages = {passage(e, f).text for e in train[:400] for f in HELDOUT_FAMILIES}
    held_forms = {
        rel.questions[f].format(e=e.name)
        for e in train
        for rel in KIND_BY_NAME[e.kind].relations
        for f in HELDOUT_QUESTION_FORMS
    }
    evaluation_names = {item.entity for split in ("dev", "test") for item in evaluation_set(split).items}
    evaluation_words = {key.rsplit("/", 1)[-1].split("-")[0].capitalize() for key in evaluation_names}
    no_answer = 0
    for x in examples:
        assert x.question not in held_forms
        assert x.context not in held_passages
        if x.answer is None:
            no_answer += 1
            continue
        assert x.context[x.start : x.start + len(x.answer)] == x.answer
    checked = [x for x in examples if x.context in training_passages]
    assert len(checked) > 1000  # the first 400 entities' passages are among them
    for x in examples:
        assert not (set(x.question.split()) & evaluation_words)
    assert abs(no_answer / len(examples) - NO_ANSWER_SHARE * 0.99) < 0.03


def _evaluation_words() -> set[str]:
    keys = {item.entity for split in ("dev", "test") for item in evaluation_set(split).items}
    return {key.rsplit("/", 1)[-1].split("-")[0].capitalize() for key in keys}


def test_completion_examples_are_prefixes_or_paraphrases_and_hold_nothing_held_out():
    examples = list(completion_examples(random.Random(6)))
    train = world()["train"]
    assert len(examples) > 2 * len(train)
    held = {
        w.format(e=e.name).lower().rstrip(".?")
        for e in train
        for rel in KIND_BY_NAME[e.kind].relations
        for w in rel.held_out_wordings
    }
    evaluation_words = _evaluation_words()
    prefixes = 0
    for x in examples:
        assert x.question.lower() not in held
        assert not (set(x.question.split()) & evaluation_words)
        if x.answer is None:
            continue
        assert x.context[x.start : x.start + len(x.answer)] == x.answer
        if x.context.startswith(x.question):  # a word-for-word prefix: the value comes next
            prefixes += 1
            assert x.context[len(x.question) :].lstrip().startswith(x.answer)
    assert 0.25 < prefixes / len(examples) < 0.5


def test_update_examples_read_the_notice_beside_the_old_passage():
    examples = list(update_examples(random.Random(7)))
    changed = {entity.name: (rel, new, entity.facts[rel.name]) for entity, _, rel, new in updates()}
    on_notice = 0
    for x in examples:
        assert len(x.distractors) == 1
        assert x.context[x.start : x.start + len(x.answer)] == x.answer
        name = next(n for n in changed if n in x.question)
        rel, new, old = changed[name]
        if x.answer == new and old in x.distractors[0]:  # the changed relation: the notice answers
            on_notice += 1
            assert old not in x.context
    assert on_notice > 0.9 * len(changed)


def test_fact_examples_are_the_training_entities_facts_only():
    from index.facts import entities_of, is_heldout

    examples = list(fact_examples(random.Random(8)))
    train_names = {e.name for e in entities_of("train")}
    held_names = {e.name for e in entities_of("heldout")}
    answered = [x for x in examples if x.answer is not None]
    assert len(answered) > 500
    for x in examples:
        named = [n for n in train_names | held_names if n in x.question]
        assert named and not set(named) <= held_names  # asked about a training entity
        if x.answer is not None:
            assert x.context[x.start : x.start + len(x.answer)] == x.answer
    assert not any(is_heldout(e.key) for e in entities_of("train"))
    assert any("calling code" in x.question for x in answered)  # the relation round 23 lost
