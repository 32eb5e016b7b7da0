"""The span reader's training examples (`index.span_examples`): answers where they say, and nothing
held out: no held-out style family, question form, or dev / test entity."""

import random

from index.reading import HELDOUT_FAMILIES, TRAIN_FAMILIES, evaluation_set, passage, world
from index.reading_world import HELDOUT_QUESTION_FORMS, KIND_BY_NAME
from index.span_examples import NO_ANSWER_SHARE, reading_examples


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
