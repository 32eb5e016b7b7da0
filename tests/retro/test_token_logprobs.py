"""Scoring a token sequence (retro.token_logprobs): the log-probabilities are exactly those of the
distribution generation samples from, for RETRO (padding, neighbours, copy head) and for a
Hugging Face model; token-id prompts are fed as given; scoring reuses generation's neighbours."""

import zlib

import numpy as np
import pytest
import torch

from retro.generate import RetroLanguageModel
from retro.sampling import SamplingParams
from retro.token_logprobs import (
    LOGPROB_FLOOR,
    RememberedRetrieval,
    score_tokens,
    sequence_logprobs,
    stream_ids,
    token_text,
)

from .conftest import make_model, tiny_config

M = 4


class TextRetriever:
    """Neighbours [n, k, r] that depend only on each query text (as a real index's do); counts calls."""

    def __init__(self, vocab_size: int, k: int = 2, r: int = 8):
        self.vocab_size, self.k, self.r = vocab_size, k, r
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts += list(texts)
        rows = [
            np.random.default_rng(zlib.crc32(t.encode())).integers(2, self.vocab_size, size=(self.k, self.r))
            for t in texts
        ]
        return np.stack(rows)


@pytest.fixture()
def lm(tokenizer):
    model = make_model(tiny_config(vocab_size=tokenizer.vocab_size, max_seq_len=48, copy_match_tokens=2))
    return RetroLanguageModel(model, tokenizer)


def generation_distributions(lm, prompt_ids, sampled, retrieve):
    """What generation computes, step by step with the KV cache: the log-probabilities (pad
    renormalised away) each sampled token was drawn from, and the padded prompt's own rows."""
    model, cfg = lm.model, lm.model.config
    ids = [cfg.pad_id] * ((-len(prompt_ids)) % M) + list(prompt_ids)
    n_pad = len(ids) - len(prompt_ids)

    def neighbours(ends):
        texts = [lm.tokenizer.decode(ids[max(0, e - M) : e]) for e in ends]
        return torch.as_tensor(np.asarray(retrieve(texts))[..., : cfg.retrieved_len])

    def renormalised(logprobs):
        logprobs = logprobs.clone()
        logprobs[..., cfg.pad_id] = float("-inf")
        return logprobs.log_softmax(dim=-1)

    with torch.inference_mode():
        prompt_neighbours = neighbours([(u + 1) * M for u in range(len(ids) // M)])[None]
        logprobs, cache = model.prefill(torch.tensor([ids]), prompt_neighbours)
        rows = [renormalised(logprobs[0, -1])]
        for token in sampled[:-1]:
            p = cache.pos
            ids.append(token)
            step_neighbours = neighbours([p + 1]) if (p + 1) % M == 0 else None
            rows.append(renormalised(model.decode_step(torch.tensor([token]), cache, step_neighbours)[0]))
    return renormalised(logprobs[0, n_pad:-1]), torch.stack(rows)


def test_retro_scores_are_the_distributions_generation_sampled_from(lm, tokenizer):
    prompt_ids = tokenizer.encode("The capital of France is Paris.")[:10]  # not a whole number of chunks
    assert len(prompt_ids) % M != 0
    retriever = TextRetriever(tokenizer.vocab_size)
    remembered = RememberedRetrieval(retriever)
    sampled: list[int] = []
    params = SamplingParams(max_new_tokens=9, temperature=1.0, seed=3)  # crosses two chunk ends
    list(stream_ids(lm, prompt_ids, params, remembered, sampled))
    assert len(sampled) == 9
    searched = len(retriever.texts)

    rows = sequence_logprobs(lm, prompt_ids + sampled, len(prompt_ids), remembered.replay)
    assert len(retriever.texts) == searched, "scoring searched again instead of reusing the neighbours"
    prompt_rows, sampled_rows = generation_distributions(
        lm, prompt_ids, sampled, TextRetriever(tokenizer.vocab_size)
    )
    P = len(prompt_ids)
    assert rows.shape == (P + len(sampled) - 1, lm.model.config.vocab_size)
    torch.testing.assert_close(rows[: P - 1], prompt_rows, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rows[P - 1 :], sampled_rows, atol=1e-4, rtol=1e-4)


def test_greedy_tokens_are_the_most_likely_in_their_scores(lm, tokenizer):
    prompt_ids = tokenizer.encode("Gold has the")
    retriever = TextRetriever(tokenizer.vocab_size)
    sampled: list[int] = []
    list(stream_ids(lm, prompt_ids, SamplingParams(max_new_tokens=8, temperature=0), retriever, sampled))
    scores = score_tokens(lm, prompt_ids + sampled, len(prompt_ids), top_n=3, retrieve=retriever)
    assert scores.logprobs[0] is None and scores.top[0] is None
    assert len(scores.logprobs) == len(prompt_ids) + len(sampled)
    for i in range(len(prompt_ids), len(scores.ids)):
        best_id, best = scores.top[i][0]
        assert best_id == scores.ids[i] and scores.logprobs[i] == pytest.approx(best)
        values = [v for _, v in scores.top[i]]
        assert values == sorted(values, reverse=True) and len(values) == 3


def test_a_pad_token_in_a_prompt_scores_the_floor_and_every_value_is_finite(lm, tokenizer):
    ids = tokenizer.encode("Gold") + [lm.model.config.pad_id] + tokenizer.encode(" has")
    scores = score_tokens(lm, ids, top_n=2, retrieve=TextRetriever(tokenizer.vocab_size))
    assert scores.logprobs[len(tokenizer.encode("Gold"))] == LOGPROB_FLOOR
    assert all(np.isfinite(v) for v in scores.logprobs[1:])
    assert token_text(lm, lm.eos_id) == "<eos>"


def test_without_retrieval_nothing_is_padded_or_searched(lm, tokenizer):
    ids = tokenizer.encode("Water boils at one hundred")
    with torch.inference_mode():
        expected = lm.model(torch.tensor([ids[:-1]]))[0].clone()
        expected[:, lm.model.config.pad_id] = float("-inf")
        expected = expected.log_softmax(-1)
    torch.testing.assert_close(sequence_logprobs(lm, ids), expected)


def test_hugging_face_scores_match_its_generation(tmp_path):
    from retro.hf_model import load_hf_model
    from tests.tiny_gpt2 import save_tiny_gpt2

    folder = save_tiny_gpt2(
        tmp_path / "gpt2",
        ["Water boils at one hundred degrees."] * 8,
        vocab_size=300,
        n_layer=2,
        n_embd=32,
        n_positions=64,
    )
    lm = load_hf_model(folder)
    prompt_ids = lm.encode_prompt("Water boils")
    sampled: list[int] = []
    list(stream_ids(lm, prompt_ids, SamplingParams(max_new_tokens=6, temperature=0), None, sampled))
    scores = score_tokens(lm, prompt_ids + sampled, top_n=1)
    for i in range(len(prompt_ids), len(scores.ids)):
        assert scores.top[i][0][0] == scores.ids[i]
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([prompt_ids + sampled])).logits[0, :-1]
    torch.testing.assert_close(sequence_logprobs(lm, prompt_ids + sampled), logits.log_softmax(-1))
    assert token_text(lm, lm.eos_id) == lm.tokenizer.eos_token
