"""Generation: determinism, retrieval for short prompts and at chunk boundaries, stop strings,
max tokens, streaming, and clear errors."""

import numpy as np
import pytest
import torch

from retro.generate import RetroLanguageModel
from retro.language_model import PromptTooLongError
from retro.sampling import SamplingParams, sample_token, sample_tokens

from .conftest import make_model, tiny_config

M = 4


class SpyRetriever:
    """Records every call and returns distinct random neighbours [n, k, r] for each text."""

    def __init__(self, vocab_size: int, k: int = 2, r: int = 8, seed: int = 0):
        self.calls: list[list[str]] = []
        self.returned: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)
        self.vocab_size, self.k, self.r = vocab_size, k, r

    def __call__(self, texts):
        self.calls.append(list(texts))
        out = self.rng.integers(2, self.vocab_size, size=(len(texts), self.k, self.r))
        self.returned.append(out)
        return out


@pytest.fixture()
def model(tokenizer):
    return make_model(tiny_config(vocab_size=tokenizer.vocab_size, max_seq_len=48))


@pytest.fixture()
def lm(model, tokenizer):
    return RetroLanguageModel(model, tokenizer)


def test_same_seed_same_output(lm, tokenizer):
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=123)
    a = lm.generate("The capital", params, retrieve=SpyRetriever(tokenizer.vocab_size))
    b = lm.generate("The capital", params, retrieve=SpyRetriever(tokenizer.vocab_size))
    assert a == b
    outs = {lm.generate("The capital", SamplingParams(max_new_tokens=12, seed=s)).text for s in range(6)}
    assert len(outs) > 1  # the seed matters


def test_short_prompt_is_retrieved_and_its_neighbours_reach_the_model(lm, model, tokenizer, monkeypatch):
    prompt = "Gold"  # shorter than one chunk (4 tokens)
    assert len(tokenizer.encode(prompt)) < M
    seen = {}
    real_prefill = model.prefill

    def spy_prefill(tokens, neighbours=None, cache=None, last_copy_bias=0.0):
        seen["tokens"], seen["neighbours"] = tokens, neighbours
        return real_prefill(tokens, neighbours, cache, last_copy_bias)

    monkeypatch.setattr(model, "prefill", spy_prefill)
    spy = SpyRetriever(tokenizer.vocab_size)
    lm.generate(prompt, SamplingParams(max_new_tokens=1, temperature=0), retrieve=spy)
    assert spy.calls[0] == [prompt]  # retrieved with the prompt's own text
    assert seen["tokens"].shape[1] == M and seen["tokens"][0, 0] == tokenizer.pad_id  # left-padded to a chunk
    torch.testing.assert_close(seen["neighbours"][0], torch.as_tensor(spy.returned[0]))
    # and the answer depends on them: other neighbours, other first-token distribution
    with torch.inference_mode():
        logits_a, _ = real_prefill(seen["tokens"], seen["neighbours"])
        logits_b, _ = real_prefill(seen["tokens"], torch.full_like(seen["neighbours"], 7))
    assert not torch.allclose(logits_a[0, -1], logits_b[0, -1])


def test_retrieval_at_every_chunk_boundary(lm, tokenizer):
    spy = SpyRetriever(tokenizer.vocab_size)
    prompt = "The capital of France is"
    n_prompt = len(tokenizer.encode(prompt))
    padded = n_prompt + (-n_prompt) % M
    result = lm.generate(prompt, SamplingParams(max_new_tokens=10, temperature=0), retrieve=spy)
    assert len(spy.calls[0]) == padded // M  # one text per complete prompt chunk
    n_new = result.completion_tokens
    # a token at position p closes a chunk when (p + 1) % M == 0; the last sampled token is never fed
    fed = range(padded, padded + n_new - 1)
    assert len(spy.calls) - 1 == sum((p + 1) % M == 0 for p in fed)
    assert all(len(c) == 1 for c in spy.calls[1:])


@pytest.mark.parametrize("returned_len", [12, 5])
def test_neighbours_are_fitted_to_the_models_retrieved_len(tokenizer, monkeypatch, returned_len):
    """The caller hands in what the index gives; the model cuts or pads it to its own r."""
    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size, max_seq_len=48, retrieved_len=8))
    seen = []
    real_prefill = model.prefill

    def spy_prefill(tokens, neighbours=None, cache=None, last_copy_bias=0.0):
        seen.append(neighbours)
        return real_prefill(tokens, neighbours, cache, last_copy_bias)

    monkeypatch.setattr(model, "prefill", spy_prefill)
    spy = SpyRetriever(tokenizer.vocab_size, r=returned_len)
    RetroLanguageModel(model, tokenizer).generate(
        "Gold", SamplingParams(max_new_tokens=1, temperature=0), retrieve=spy
    )
    fitted = seen[0][0]
    assert fitted.shape[-1] == 8
    kept = min(returned_len, 8)
    torch.testing.assert_close(fitted[..., :kept], torch.as_tensor(spy.returned[0])[..., :kept])
    assert (fitted[..., kept:] == tokenizer.pad_id).all()


def test_baseline_needs_no_retrieval_and_no_padding(tokenizer):
    base = make_model(tiny_config(vocab_size=tokenizer.vocab_size, cca_layers=(), copy_head=False))
    spy = SpyRetriever(tokenizer.vocab_size)
    out = RetroLanguageModel(base, tokenizer).generate(
        "Gold", SamplingParams(max_new_tokens=5, temperature=0), retrieve=spy
    )
    assert spy.calls == [] and out.completion_tokens >= 1


def test_max_tokens_gives_length(lm):
    out = lm.generate("Water", SamplingParams(max_new_tokens=7, temperature=0))
    if out.finish_reason == "length":
        assert out.completion_tokens == 7
    else:  # the random model chose <eos> first
        assert out.completion_tokens <= 7


def test_stop_string_ends_generation_before_it(lm):
    greedy = SamplingParams(max_new_tokens=30, temperature=0)
    full = lm.generate("Mount", greedy).text
    assert len(full) > 6
    stop = full[3:6]
    out = lm.generate("Mount", SamplingParams(max_new_tokens=30, temperature=0, stop=(stop,)))
    assert out.finish_reason == "stop"
    assert out.text == full[: full.index(stop)]
    assert stop not in out.text


def test_stream_pieces_join_to_generate_text_and_hold_back_stop_prefixes(lm):
    greedy = SamplingParams(max_new_tokens=30, temperature=0)
    full = lm.generate("Mount", greedy).text
    pieces = list(lm.stream("Mount", greedy))
    assert "".join(p.text for p in pieces) == full
    assert all(p.finish_reason is None for p in pieces[:-1]) and pieces[-1].finish_reason
    stop = full[10:14]
    stopped = list(lm.stream("Mount", SamplingParams(max_new_tokens=30, temperature=0, stop=(stop,))))
    assert "".join(p.text for p in stopped) == full[: full.index(stop)]
    assert sum(p.n_tokens for p in stopped) <= 30


def test_context_end_gives_length(tokenizer):
    short = make_model(tiny_config(vocab_size=tokenizer.vocab_size, max_seq_len=12))
    out = RetroLanguageModel(short, tokenizer).generate(
        "The capital of", SamplingParams(max_new_tokens=50, temperature=0)
    )
    assert out.completion_tokens <= 12 - len(tokenizer.encode("The capital of")) + 1


def test_prompt_too_long_names_the_limit(lm):
    with pytest.raises(PromptTooLongError, match="limit is 44 prompt tokens") as err:
        lm.generate("The capital of France is Paris. " * 20, retrieve=SpyRetriever(300))
    assert err.value.limit == 44 and err.value.prompt_tokens > 44


def test_bad_retriever_output_is_a_clear_error(lm):
    with pytest.raises(ValueError, match=r"retrieve must return token ids of shape \[1, k, r\]"):
        lm.generate("Gold", retrieve=lambda texts: np.zeros((2, 8), dtype=np.int64))


@pytest.mark.parametrize(
    "kwargs,message",
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
     ({"top_k": -2}, "top_k"), ({"stop": ("",)}, "stop"), ({"first_copy_bias": -1.0}, "first_copy_bias"),
     ({"first_copy_bias": float("inf")}, "first_copy_bias")],
)  # fmt: skip
def test_sampling_params_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampling_filters():
    logits = torch.tensor([0.0, 3.0, 2.9, -1.0])
    g = torch.Generator().manual_seed(0)
    assert sample_token(logits, SamplingParams(temperature=0), g) == 1
    assert {sample_token(logits, SamplingParams(top_k=1), g) for _ in range(20)} == {1}
    assert {sample_token(logits, SamplingParams(top_p=0.3), g) for _ in range(20)} == {1}
    assert {sample_token(logits, SamplingParams(top_k=2), g) for _ in range(50)} == {1, 2}


def test_a_wider_query_window_reaches_back_over_chunk_boundaries(model, tokenizer):
    """With query_tokens = 3m the retrieval text of a chunk holds the two chunks before it as well;
    the default queries each chunk with its own text only, as training retrieved."""
    prompt = "The capital of France is Paris and the capital of Spain is"
    ids = tokenizer.encode(prompt)
    ids = [0] * ((-len(ids)) % M) + ids
    params = SamplingParams(max_new_tokens=1, temperature=0)
    own, wide = SpyRetriever(tokenizer.vocab_size), SpyRetriever(tokenizer.vocab_size)
    RetroLanguageModel(model, tokenizer).generate(prompt, params, retrieve=own)
    RetroLanguageModel(model, tokenizer, query_tokens=3 * M).generate(prompt, params, retrieve=wide)
    n = len(ids) // M
    assert own.calls[0] == [tokenizer.decode(ids[u * M : (u + 1) * M]) for u in range(n)]
    assert wide.calls[0] == [tokenizer.decode(ids[max(0, (u - 2) * M) : (u + 1) * M]) for u in range(n)]
    with pytest.raises(ValueError, match="at least the chunk size"):
        RetroLanguageModel(model, tokenizer, query_tokens=M - 1)


def test_a_chats_system_message_is_never_searched_and_the_question_is(model, tokenizer):
    """A chat's retrieval queries start at its first user turn (`query_start`), in the prompt's
    chunks and in every chunk generation closes; a chunk wholly inside the system message keeps its
    own window; without query_start the system message is searched as before."""
    from retro.chat_template import ChatTurn, generation_prompt

    system, question = "Gold is the highest.", "The capital of France is"
    chat = generation_prompt([ChatTurn("system", system), ChatTurn("user", question)])
    assert chat.text[chat.query_start :] == question
    lm = RetroLanguageModel(model, tokenizer, query_tokens=6 * M)  # wide: it reaches the system message
    params = SamplingParams(max_new_tokens=12, temperature=0)
    plain, chat_spy = SpyRetriever(tokenizer.vocab_size), SpyRetriever(tokenizer.vocab_size)
    lm.generate(chat.text, params, plain)
    lm.generate(chat.text, params, chat_spy, chat.query_start)
    assert "highest" in plain.calls[0][-1]  # the default searches the system message too
    # the chunk the answer reads is searched with the question whole (and the joiner's space)
    assert chat_spy.calls[0][-1].lstrip() == question
    ids = tokenizer.encode(chat.text)
    floor = (-len(ids)) % M + len(tokenizer.encode(system))  # padded position of the question's first token
    past_system = chat_spy.calls[0][floor // M :] + [q for call in chat_spy.calls[1:] for q in call]
    assert len(chat_spy.calls) > 2  # generation closed chunks too; none of these read the system message
    assert all("highest" not in q and "Gold" not in q for q in past_system)
    assert floor >= M  # the first chunk lies inside the system message ...
    assert chat_spy.calls[0][0] == plain.calls[0][0]  # ... and keeps its own window


def test_query_start_counts_only_the_tokens_wholly_before_it(lm, tokenizer):
    text = "Be brief. When was it?"
    ids = lm.encode_prompt(text)
    assert lm.prompt_tokens_before(text, ids, 0) == 0
    before = lm.prompt_tokens_before(text, ids, len("Be brief. "))
    assert tokenizer.decode(ids[:before]) == "Be brief." and tokenizer.decode(ids[before:]) == " When was it?"
    assert lm.prompt_tokens_before(text, ids, len(text)) == len(ids) - 1  # the last token is always searched


@pytest.mark.parametrize("temperature", [1e-240, 1e-30, 5e-324, 1e-4])
def test_tiny_positive_temperatures_are_greedy_not_nan(temperature):
    """A fuzzer found HTTP 500 for temperature 1e-240 (logits / t overflowed to inf, softmax NaN)."""
    logits = torch.tensor([-3.0, -0.5, -1.0, float("-inf")])
    params = SamplingParams(temperature=temperature, top_p=0.9, top_k=3, seed=1)
    assert sample_token(logits, params, torch.Generator().manual_seed(0)) == 1


def test_a_non_finite_distribution_falls_back_to_the_most_likely_token():
    logits = torch.tensor([float("nan"), 2.0, 1.0])
    assert sample_token(logits, SamplingParams(temperature=1.0), torch.Generator().manual_seed(0)) in (0, 1)
    huge = torch.tensor([3e38, -3e38, 0.0])
    assert sample_token(huge, SamplingParams(temperature=0.01), torch.Generator().manual_seed(0)) == 0


def test_sample_tokens_draws_each_row_as_sample_token_alone():
    """The batch engine's one call per step (`sample_tokens`) gives every row the token, and leaves
    its generator in the state, that `sample_token` would alone: greedy, temperature-only (shared
    softmax), top-k, top-p, tiny temperatures and a non-finite row, over many steps."""
    settings = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.7),
        SamplingParams(temperature=1.3),
        SamplingParams(temperature=0.9, top_k=5),
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=1e-240),
        SamplingParams(temperature=1.0, top_k=10_000),  # top-k beyond the vocabulary: no filter
        SamplingParams(temperature=0.01),
    ]
    g = torch.Generator().manual_seed(3)
    batched = [torch.Generator().manual_seed(100 + b) for b in range(len(settings))]
    alone = [torch.Generator().manual_seed(100 + b) for b in range(len(settings))]
    for step in range(40):
        logits = torch.randn(len(settings), 50, generator=g).log_softmax(dim=-1) * (1 + step % 3)
        if step % 7 == 0:
            logits[-1] = torch.tensor([3e38, -3e38] + [0.0] * 48)  # overflows at temperature 0.01
        want = [sample_token(logits[b], p, alone[b]) for b, p in enumerate(settings)]
        assert sample_tokens(logits, settings, batched) == want, step
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(alone, batched, strict=True))


def test_sampled_tokens_follow_the_distribution_and_never_take_a_zero_probability_token():
    """The inverse-transform draw: frequencies over 20,000 draws match the softmax within 1.5
    points, a token of probability 0 (a -inf logit, as padding or top-k leave) is never drawn."""
    logits = torch.tensor([0.1, 0.0, 0.6, 0.3]).log()  # log 0 = -inf
    g = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0)
    draws = torch.tensor(sample_tokens(logits.expand(20_000, -1), [params] * 20_000, [g] * 20_000))
    share = torch.bincount(draws, minlength=4).double() / len(draws)
    assert share[1] == 0
    expected = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    torch.testing.assert_close(share, expected, atol=0.015, rtol=0)
    alone = [sample_token(logits, params, g) for _ in range(2_000)]
    assert 1 not in alone and abs(alone.count(2) / 2_000 - 0.6) < 0.04
