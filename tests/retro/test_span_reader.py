"""The span reader (`retro.span_reader`): MiniLM with adapters that starts as MiniLM, stores only what
it trained, gives each decoder token id the start probability of the word piece it holds, and
pulls a generation's first token by exactly its bias (alone and batched alike, nothing when off).
Its training and examples: tests/retro/test_span_reader_train.py."""

import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from retro.batch_engine import BatchedRetroLanguageModel
from retro.checkpoint import load_checkpoint, save_checkpoint
from retro.generate import RetroLanguageModel
from retro.sampling import SamplingParams
from retro.span_reader import (
    FILE,
    SpanFollower,
    SpanReader,
    describe,
    first_token_bias,
    load_span_reader,
    read,
    start_probabilities,
    token_texts,
)
from service.cli import app

from .conftest import make_model, tiny_config


@pytest.fixture(scope="module")
def reader() -> SpanReader:
    torch.manual_seed(0)
    r = SpanReader(rank=2)
    with torch.no_grad():  # a reader that has learned something: adapters and head away from their start
        for name, p in r.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05 if name.endswith(".b") else 0.5)
    return r.eval()


class PointingReader(torch.nn.Module):
    """The real reader's word pieces, and a start logit of 20 on the piece at character `char` of
    the first context, an end logit of 20 on the piece at `end_char` (default: `char`), 0 elsewhere
    (the no-answer slot included)."""

    def __init__(self, real: SpanReader, char: int, end_char: int | None = None):
        super().__init__()
        self.real, self.char = real, char
        self.end_char = char if end_char is None else end_char

    def encode(self, questions, contexts):
        return self.real.encode(questions, contexts)

    def forward(self, encoded):
        start = torch.zeros(encoded.context.shape).masked_fill(~encoded.context, -1e4)
        end = start.clone()
        for pos, (a, b) in enumerate(encoded.offsets[0]):
            if pos and encoded.context[0, pos] and a <= self.char < b:
                start[0, pos] = 20.0
            if pos and encoded.context[0, pos] and a <= self.end_char < b:
                end[0, pos] = 20.0
        return start, end


def test_an_untrained_reader_is_minilm():
    from transformers import AutoModel

    from index.encoder import model_path

    torch.manual_seed(1)
    fresh = SpanReader(rank=4)
    plain = AutoModel.from_pretrained(model_path()).eval()
    enc = fresh.encode(["Who founded it?"], ["It was founded by Ada Brisk in 1911."])
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.bert(**enc.inputs).last_hidden_state, plain(**enc.inputs).last_hidden_state
        )
    # only the adapters and the head are trained; MiniLM's own weights are frozen
    trained = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("head.") or n.endswith((".a", ".b")) for n in trained)
    assert len([n for n in trained if n.endswith(".a")]) == 6 * 6  # six linears in each of six blocks


def test_start_mass_goes_to_the_decoder_token_that_holds_the_start(reader, tokenizer):
    text = "The capital of France is Paris."
    ids = tokenizer.encode(text)
    joined, starts = token_texts(tokenizer, ids)
    assert joined == tokenizer.decode(ids)  # a byte-level tokenizer's pieces add up to the text
    at = joined.index("Paris") + 2  # a character inside the word: its token, not the next
    holder = max(i for i, s in enumerate(starts) if s <= at)
    p = start_probabilities(PointingReader(reader, at), "Where?", [ids, ids[:3]], tokenizer, 300)
    assert int(p.argmax()) == ids[holder]
    assert 0.99 < float(p.sum()) <= 1.0 + 1e-6  # nearly all of it: the no-answer slot's logit is 0
    assert set(p.nonzero().flatten().tolist()) <= set(ids)  # mass only on ids the neighbours hold


def test_the_best_span_is_the_decoder_tokens_from_its_start_to_its_end(reader, tokenizer):
    text = "The capital of France is Paris, on the Seine."
    ids = tokenizer.encode(text)
    joined, starts = token_texts(tokenizer, ids)
    a, b = joined.index("Paris") + 1, joined.index("Seine") + 3

    def holder(char):
        return max(i for i, s in enumerate(starts) if s <= char)

    reading = read(PointingReader(reader, a, b), "Where?", [ids, ids[:3]], tokenizer, 300)
    # from the token holding the start piece's first character to the one holding the end piece's last
    assert reading.span == ids[holder(joined.index("Paris")) : holder(joined.index("Seine") + 4) + 1]
    assert tokenizer.decode(reading.span).strip().startswith("Paris") and "Seine" in tokenizer.decode(
        reading.span
    )
    # an end further than MAX_SPAN_PIECES word pieces on is out of reach: the span stops before it
    long_text = "Paris " + "and more words " * 20 + "Seine."
    long_ids = tokenizer.encode(long_text)
    far = read(PointingReader(reader, 1, len(long_text) - 3), "Where?", [long_ids], tokenizer, 300)
    assert tokenizer.decode(far.span).startswith("Paris") and "Seine" not in tokenizer.decode(far.span)
    # where the no-answer slot scores higher than any span, there is none
    doubtful = PointingReader(reader, a, b)
    doubtful.forward = lambda enc: tuple(
        t.index_fill(1, torch.tensor([0]), 50.0) for t in PointingReader.forward(doubtful, enc)
    )
    assert read(doubtful, "Where?", [ids], tokenizer, 300).span == []
    assert read(reader, "Where?", [[], []], tokenizer, 300).span == []


def test_the_follower_pulls_the_spans_next_token_until_the_generation_leaves_it():
    follower = SpanFollower([5, 6, 7], bonus=4.0)
    logprobs = torch.log_softmax(torch.zeros(10), dim=-1)
    assert torch.equal(follower.biased(logprobs), logprobs)  # before the first token: nothing
    follower.saw(5)
    pulled = follower.biased(logprobs)
    assert int(pulled.argmax()) == 6
    torch.testing.assert_close(pulled.exp().sum(), torch.tensor(1.0))  # renormalised
    torch.testing.assert_close(pulled[6] - pulled[0], torch.tensor(4.0))
    follower.saw(6)
    assert int(follower.biased(logprobs).argmax()) == 7
    follower.saw(7)  # the span is said: nothing more to pull
    assert torch.equal(follower.biased(logprobs), logprobs)
    left = SpanFollower([5, 6, 7], bonus=4.0)
    left.saw(5)
    left.saw(9)  # off the span: never again
    left.saw(7)
    assert torch.equal(left.biased(logprobs), logprobs)
    off = SpanFollower([5, 6], bonus=0.0)
    off.saw(5)
    assert torch.equal(off.biased(logprobs), logprobs)


def test_generation_finishes_the_readers_span_alone_and_batched(model, tokenizer, reader):
    passage = tokenizer.encode("Paris is on the Seine river in France.")

    def passage_retrieve(texts):  # every chunk's neighbours: "Paris is on the Se", "ine river in F"
        return np.array([[passage[:8], passage[8:16]]] * len(texts))

    pointing = PointingReader(reader, 0, 10)  # the span "Paris is on" of the first neighbour
    sure = model.config.replace(inference_span_weight=30.0, inference_span_floor=-30.0)
    spans, followed, unfollowed = [], [], []
    for follow in (100.0, 0.0):
        m = make_model(sure.replace(inference_span_follow=follow))
        m.load_state_dict(model.state_dict())
        lm = RetroLanguageModel(m, tokenizer, span_reader=pointing)
        params = SamplingParams(max_new_tokens=8, temperature=0)
        for prompt in PROMPTS:
            ids, _, _, _, span = lm.prefilled(tokenizer.encode(prompt), passage_retrieve)
            out = lm.generate(prompt, params, passage_retrieve).text
            (followed if follow else unfollowed).append(out)
            if follow:
                spans.append(span)
                assert tokenizer.decode(span) == "Paris is on"
                assert out.startswith(
                    tokenizer.decode(span)
                )  # the first token starts it, the follower finishes it
        if follow:
            batched = BatchedRetroLanguageModel.of(lm)
            try:
                got = [batched.generate(p, params, passage_retrieve).text for p in PROMPTS]
            finally:
                batched.close()
            assert got == followed
    assert any(
        not out.startswith(tokenizer.decode(span)) for out, span in zip(unfollowed, spans, strict=True)
    )


def test_no_neighbour_text_means_no_start(reader, tokenizer):
    p = start_probabilities(reader, "Where?", [[], []], tokenizer, 300)
    assert float(p.sum()) == 0.0
    bias = first_token_bias(reader, "Where?", [[], []], tokenizer, 300, weight=2.0, floor=-5.0)
    assert torch.equal(bias, torch.full((300,), -10.0))  # the same for every id: no id moves


def test_the_stored_reader_is_its_adapters_and_head_and_loads_back(reader, tmp_path):
    reader.save(tmp_path / FILE)
    assert describe(tmp_path)["rank"] == "2"
    size = (tmp_path / FILE).stat().st_size
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / FILE).stat().st_mode & 0o777 == 0o666 & ~umask  # readable as its owner's files are
    assert size < 500_000  # rank 2: not MiniLM's 90 MB
    loaded = load_span_reader(tmp_path)
    stored, own = loaded.trained_state(), reader.trained_state()
    assert stored.keys() == own.keys()
    for name, value in own.items():  # float16 on disk, float32 again once loaded
        assert stored[name].dtype == torch.float32
        torch.testing.assert_close(stored[name], value.half().float(), rtol=0, atol=0)
    enc = reader.encode(["Who built the bridge?"], ["The bridge was built by Gideon Rusk."])
    with torch.no_grad():
        for a, b in zip(reader(enc), loaded(enc), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0.05)
    assert load_span_reader(tmp_path / "none") is None
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a span reader"):
        SpanReader.load(tmp_path / "other.safetensors")


# --- generation -----------------------------------------------------------------------------------
def fake_retrieve(texts):
    rows = []
    for text in texts:
        seed = sum((i + 1) * ord(c) for i, c in enumerate(text)) % (1 << 31)
        rows.append(np.random.default_rng(seed).integers(1, 300, size=(2, 8)))
    return np.stack(rows)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = tiny_config(vocab_size=tokenizer.vocab_size, copy_match_tokens=3, copy_bag_window=6)
    return make_model(cfg.replace(inference_span_weight=2.0, inference_span_floor=-6.0))


PROMPTS = ["The capital of France is", "Gold has the chemical symbol", "Water boils at one hundred"]


def test_the_first_token_gets_exactly_the_readers_bias(model, tokenizer, reader):
    with_reader = RetroLanguageModel(model, tokenizer, span_reader=reader)
    without = RetroLanguageModel(model, tokenizer)
    moved = 0
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        _, last, _, _, _ = with_reader.prefilled(ids, fake_retrieve)
        _, plain, _, _, span = without.prefilled(ids, fake_retrieve)
        assert span == []  # no reader, no span
        padded = [model.config.pad_id] * ((-len(ids)) % model.config.chunk_size) + ids
        chunks = len(padded) // model.config.chunk_size
        texts = [tokenizer.decode(padded[: (u + 1) * 4][-4:]) for u in range(chunks)]
        shown = with_reader._neighbours(fake_retrieve(texts), chunks)[-1]  # the last chunk's, as fitted
        rows = [[t for t in row if t != model.config.pad_id] for row in shown.tolist()]
        bias = first_token_bias(reader, prompt, rows, tokenizer, plain.shape[0], 2.0, -6.0)
        expected = torch.log_softmax(plain + bias, dim=-1)
        expected[model.config.pad_id] = float("-inf")
        torch.testing.assert_close(last, expected)
        moved += int(last.argmax()) != int(plain.argmax())
        # a request's weight 0, and retrieval off, leave the model's own distribution
        _, off, _, _, _ = with_reader.prefilled(ids, fake_retrieve, span_weight=0.0)
        torch.testing.assert_close(off, plain)
        _, no_retrieval, _, _, _ = with_reader.prefilled(ids, None)
        _, plain_no_retrieval, _, _, _ = without.prefilled(ids, None)
        torch.testing.assert_close(no_retrieval, plain_no_retrieval)
    assert moved  # the bias is strong enough to change some first token


def test_batched_decoding_reads_with_the_reader_as_alone(model, tokenizer, reader):
    settings = [
        SamplingParams(max_new_tokens=8, temperature=0),
        SamplingParams(max_new_tokens=8, temperature=0, first_candidates=3),
        SamplingParams(max_new_tokens=6, temperature=0.8, seed=4),
    ]
    alone = RetroLanguageModel(model, tokenizer, span_reader=reader)
    expected = [alone.generate(p, s, fake_retrieve).text for p, s in zip(PROMPTS, settings, strict=True)]
    plain = RetroLanguageModel(model, tokenizer)
    plain_texts = [plain.generate(p, s, fake_retrieve).text for p, s in zip(PROMPTS, settings, strict=True)]
    assert expected != plain_texts  # the reader changed something, so the comparison below means something
    batched = BatchedRetroLanguageModel.of(alone)
    try:
        assert batched.span_reader is reader
        got = [batched.generate(p, s, fake_retrieve).text for p, s in zip(PROMPTS, settings, strict=True)]
    finally:
        batched.close()
    assert got == expected


def test_the_weight_is_a_checked_config_field_written_only_when_on(model):
    cfg = model.config
    assert cfg.to_dict()["inference_span_weight"] == 2.0
    assert "inference_span_weight" not in cfg.replace(inference_span_weight=0.0).to_dict()
    with pytest.raises(ValueError, match="inference_span_weight"):
        cfg.replace(inference_span_weight=-1.0)
    with pytest.raises(ValueError, match="inference_span_floor"):
        cfg.replace(inference_span_floor=1.0)
    with pytest.raises(ValueError, match="span_weight"):
        SamplingParams(span_weight=float("nan"))
    assert "inference_span_follow" not in cfg.to_dict()  # off: not written
    assert cfg.replace(inference_span_follow=3.0).to_dict()["inference_span_follow"] == 3.0
    with pytest.raises(ValueError, match="inference_span_follow"):
        cfg.replace(inference_span_follow=float("inf"))
    with pytest.raises(ValueError, match="span_follow"):
        SamplingParams(span_follow=-1.0)


def test_export_stores_the_reader_beside_the_checkpoint_or_says_why_not(tokenizer, reader, tmp_path):
    run = save_checkpoint(
        tmp_path / "run", make_model(tiny_config(vocab_size=tokenizer.vocab_size)), tokenizer
    )
    reader_dir = tmp_path / "reader"
    reader_dir.mkdir()
    reader.save(reader_dir / FILE)
    runner = CliRunner()
    out = tmp_path / "pub"
    args = ["export", str(run), "--out", str(out), "--span-reader", str(reader_dir), "--span-weight", "1.5"]
    result = runner.invoke(app, [*args, "--span-follow", "3"])
    assert result.exit_code == 0, result.output
    model, _, _ = load_checkpoint(out)
    assert model.config.inference_span_weight == 1.5
    assert model.config.inference_span_follow == 3.0
    assert (out / FILE).read_bytes() == (reader_dir / FILE).read_bytes()
    # exporting the exported folder passes its reader on
    assert runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "again")]).exit_code == 0
    assert (tmp_path / "again" / FILE).is_file()

    def error(*extra) -> str:
        result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "x"), *extra])
        assert result.exit_code == 2, result.output
        assert not (tmp_path / "x").exists()  # nothing written
        return " ".join(result.output.split())

    assert "need a span reader" in error("--span-weight", "1")
    assert "no span_reader.safetensors" in error("--span-reader", str(tmp_path))
    assert "--span-weight" in error("--span-reader", str(reader_dir), "--span-weight", "-1")
    assert "--span-follow" in error("--span-reader", str(reader_dir), "--span-follow", "-1")
    assert "need a span reader" in error("--span-follow", "2")
    (tmp_path / "bogus").mkdir()
    (tmp_path / "bogus" / FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    assert "is not a span reader" in error("--span-reader", str(tmp_path / "bogus"))
