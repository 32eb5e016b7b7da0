"""Training the span reader (`retro.span_reader_train`): the targets are the answer's word pieces, a
few steps lower the loss on what they train on, and a killed run resumes to the weights of one that
never stopped. The examples themselves: tests/index/test_span_examples.py."""

import pytest
import torch

from index.span_examples import SpanExample
from retro.span_reader import FILE, SpanReader
from retro.span_reader_train import (
    ReaderTrainSettings,
    _slot,
    joint_logits,
    loss_of,
    targets,
    train_span_reader,
)


def example(question: str, context: str, answer: str | None) -> SpanExample:
    return SpanExample(question, context, answer, None if answer is None else context.index(answer))


EXAMPLES = [
    example("Who built the bridge?", "The bridge was built by Gideon Rusk in 1840.", "Gideon Rusk"),
    example("When was the mill restored?", "Westerholm Mill was restored in 2011.", "2011"),
    example("What does the toad eat?", "The toad eats beetles and slugs.", "beetles"),
    example("Who leads the council?", "The harbour is deep and cold.", None),
]


@pytest.fixture(scope="module")
def reader() -> SpanReader:
    torch.manual_seed(0)
    return SpanReader(rank=2)


def test_targets_are_the_answers_first_and_last_word_pieces(reader):
    enc = reader.encode([x.question for x in EXAMPLES], [x.context for x in EXAMPLES])
    start, end = targets(enc, EXAMPLES)
    for row, x in enumerate(EXAMPLES):
        if x.answer is None:
            assert start[row] == end[row] == 0
            continue
        a, b = enc.offsets[row][start[row]][0], enc.offsets[row][end[row]][1]
        assert x.context[a:b] == x.answer
    # an answer past the truncation has no target: [CLS]
    far = example("Who?", "word " * 400 + "Ada Brisk.", "Ada Brisk")
    enc = reader.encode([far.question], [far.context])
    assert [int(t) for t in targets(enc, [far])[0]] == [0]


def test_a_killed_run_resumes_to_the_weights_of_one_that_never_stopped(tmp_path):
    settings = ReaderTrainSettings(steps=4, batch_size=2, lr=1e-3, rank=2, ckpt_every=2)
    whole = train_span_reader(tmp_path / "whole", EXAMPLES, settings, log=lambda _: None)

    class Killed(Exception):
        pass

    def kill_at_3(step, loss):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_span_reader(tmp_path / "cut", EXAMPLES, settings, log=lambda _: None, on_step=kill_at_3)
    assert not (tmp_path / "cut" / FILE).exists()  # no weights file until the run is done
    said = []
    resumed = train_span_reader(tmp_path / "cut", EXAMPLES, settings, log=said.append)
    assert said == [f"resuming {tmp_path / 'cut'} at step 2"]
    a, b = SpanReader.load(whole).trained_state(), SpanReader.load(resumed).trained_state()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    other = ReaderTrainSettings(steps=5, batch_size=2, lr=1e-3, rank=2, ckpt_every=2)
    with pytest.raises(ValueError, match="other settings"):
        train_span_reader(tmp_path / "cut", EXAMPLES, other, log=lambda _: None)


def test_training_lowers_the_loss_on_its_examples(tmp_path):
    settings = ReaderTrainSettings(steps=30, batch_size=4, lr=3e-3, rank=4, ckpt_every=30)
    torch.manual_seed(0)
    with torch.no_grad():
        before = float(loss_of(SpanReader(rank=4), EXAMPLES))
    trained = SpanReader.load(train_span_reader(tmp_path / "run", EXAMPLES, settings, log=lambda _: None))
    trained.eval()
    with torch.no_grad():
        after = float(loss_of(trained, EXAMPLES))
    assert after < before / 2, (before, after)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        train_span_reader(tmp_path, EXAMPLES, ReaderTrainSettings(steps=0))
    with pytest.raises(ValueError, match="no training examples"):
        train_span_reader(tmp_path, [], ReaderTrainSettings(steps=1))


def test_an_example_and_its_distractors_share_one_softmax_as_generation_reads_them(reader):
    gold = example("Who built the bridge?", "The bridge was built by Gideon Rusk in 1840.", "Gideon Rusk")
    other = "The old bridge was built by Ada Brisk in 1790."
    enc = reader.encode([gold.question] * 2, [gold.context, other])
    with torch.no_grad():
        start, end = reader(enc)
        joint = joint_logits(start, enc, [0, 1])
    # slot 0 is the contexts' [CLS] averaged; then every context position of each row in turn
    assert joint[0] == start[:, 0].mean()
    positions = [int(p) for p in torch.nonzero(enc.context[0]).flatten()[1:]]
    for pos in positions:
        assert joint[_slot(enc, 0, pos)] == start[0, pos]
    assert len(joint) == 1 + len(positions) + int(enc.context[1].sum()) - 1
    s, e = (int(t[0]) for t in targets(enc, [gold]))
    with torch.no_grad():
        want = (
            -(
                torch.log_softmax(joint, 0)[_slot(enc, 0, s)]
                + torch.log_softmax(joint_logits(end, enc, [0, 1]), 0)[_slot(enc, 0, e)]
            )
            / 2
        )
        got = loss_of(reader, [SpanExample(gold.question, gold.context, gold.answer, gold.start, (other,))])
    torch.testing.assert_close(got, want)
    # without distractors the joint softmax is SQuAD's own over one context
    alone = reader.encode([gold.question], [gold.context])
    with torch.no_grad():
        s1, e1 = reader(alone)
        st, et = targets(alone, [gold])
        squad = (torch.nn.functional.cross_entropy(s1, st) + torch.nn.functional.cross_entropy(e1, et)) / 2
        torch.testing.assert_close(loss_of(reader, [gold]), squad)
