"""The first token chosen among the top N by one token of lookahead (`retro.first_token`,
`RetroConfig.inference_first_candidates`): the choice is what full forward passes over the prompt
and each candidate give (the round-18 probe's rule), the prompt's cache is left as it was, and only
greedy decoding's first token is chosen this way. Generation reading it, batched and alone:
tests/retro/test_batch_decode.py."""

import pytest
import torch

from retro.config import RetroConfig
from retro.first_token import branched_cache, lookahead_choice
from retro.generate import RetroLanguageModel
from retro.sampling import SamplingParams, seeded_generator
from retro.tokenizer import Tokenizer

from .conftest import CONFIGS, make_model
from .test_model import random_inputs

NAMES = ["copy+prev2", "copy+match3+bag6", "words, no copy head", "baseline+words"]


def forward_choice(model, tokens, neighbours, first, n):
    """The probe's rule from full forward passes: each of `first`'s top n after the prompt, scored
    by its log-probability plus the best next token's (`<pad>` never)."""
    top = first.topk(n)
    seqs = torch.cat([tokens.expand(n, -1), top.indices[:, None]], dim=1)
    nb = None if neighbours is None else neighbours.expand(n, *neighbours.shape[1:])
    after = model(seqs, nb)[:, -1]
    after[:, model.config.pad_id] = float("-inf")
    return int(top.indices[(top.values + after.max(-1).values).argmax()])


PAD_LIKELIEST = " with <pad> often likeliest"


@pytest.mark.parametrize("name", NAMES + ["copy+prev2" + PAD_LIKELIEST])
def test_the_choice_is_what_full_forward_passes_give_and_the_cache_is_left_alone(name):
    cfg = CONFIGS[name.removesuffix(PAD_LIKELIEST)]
    model = make_model(cfg)
    if name.endswith(PAD_LIKELIEST):  # <pad> often the likeliest next token, which the lookahead never counts
        with torch.no_grad():
            model.wte.weight[cfg.pad_id] *= 40
    differs = 0
    # prompts of 5, 8, 9 and 13 tokens: the candidate's position closes no chunk
    for prompt_len, seed in [(n, s) for n in (5, 8, 9, 13) for s in range(4)]:
        tokens, neighbours = random_inputs(cfg, B=1, T=prompt_len, seed=seed)
        neighbours = neighbours if cfg.uses_retrieval else None
        with torch.no_grad():
            logprobs, cache = model.prefill(tokens, neighbours)
            first = logprobs[0, -1].clone()
            first[cfg.pad_id] = float("-inf")
            saved = [(layer.k.clone(), layer.v.clone()) for layer in cache.layers]
            chosen = lookahead_choice(model, first, cache, 5)
            assert chosen == forward_choice(model, tokens, neighbours, first, 5)
            differs += chosen != int(first.argmax())
            # the prompt's cache is as it was: same position, keys and values; a step from it is
            # the step a fresh prefill's cache takes
            assert cache.pos == prompt_len
            for (k, v), layer in zip(saved, cache.layers, strict=True):
                assert torch.equal(k, layer.k) and torch.equal(v, layer.v)
            _, fresh = model.prefill(tokens, neighbours)
            step = torch.tensor([chosen])
            torch.testing.assert_close(model.decode_step(step, cache), model.decode_step(step, fresh))
    assert differs  # random weights: the lookahead overrules the argmax for some prompt


def test_one_candidate_is_the_argmax_and_a_branched_cache_copies_nothing_back():
    cfg = CONFIGS["copy+match3+bag6"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, B=1, T=10, seed=3)
    with torch.no_grad():
        logprobs, cache = model.prefill(tokens, neighbours)
        first = logprobs[0, -1]
        assert lookahead_choice(model, first, cache, 1) == int(first.argmax())
        branched = branched_cache(cache, 3)
        assert branched.pos == cache.pos and branched.max_len == cache.pos + 1
        out = model.decode_step(torch.tensor([4, 5, 6]), branched)
        assert out.shape == (3, cfg.vocab_size)
        # each branch is the sequence alone: the first equals a step of the prompt's own cache
        torch.testing.assert_close(out[0], model.decode_step(torch.tensor([4]), cache)[0])
        with pytest.raises(ValueError, match="batch 1"):
            branched_cache(model.prefill(tokens.expand(2, -1), neighbours.expand(2, -1, -1, -1))[1], 3)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(["Zorbland is a small island country of quick brown foxes."] * 8, vocab_size=300)


@torch.no_grad()
def test_generation_weighs_the_candidates_only_for_greedy_decoding_and_no_chunk_search(tokenizer):
    """`RetroLanguageModel.first_token`: the lookahead's choice for a greedy first token; a sampled
    one is drawn as before; a first token that would close a chunk with retrieval (its step would
    need a search of its own) is the argmax."""
    cfg = RetroConfig.from_preset("tiny", vocab_size=300, chunk_size=4, inference_first_candidates=5)
    model = make_model(cfg).eval()
    lm = RetroLanguageModel(model, tokenizer)
    assert (
        lm.first_candidates == 5
        and RetroLanguageModel(model, tokenizer, first_candidates=0).first_candidates == 0
    )
    greedy = SamplingParams(temperature=0)
    overruled, closing = 0, 0
    for text in ["Zorbland is", "a small island", "quick brown foxes of", "country"]:
        ids = tokenizer.encode(text)
        _, last, cache, _, _ = lm.prefilled(ids, None)  # no retrieval: no padding, any position
        argmax = int(last.argmax())
        look = lookahead_choice(model, last, cache, 5)
        overruled += look != argmax
        g = seeded_generator(0, "cpu")
        assert lm.first_token(last, cache, greedy, g, with_retrieval=False) == look
        assert (
            lm.first_token(last, cache, SamplingParams(temperature=0, first_candidates=1), g, False) == argmax
        )
        closes_chunk = (cache.pos + 1) % cfg.chunk_size == 0
        assert lm.first_token(last, cache, greedy, g, with_retrieval=True) == (
            argmax if closes_chunk else look
        )
        sampled = SamplingParams(temperature=1.0, seed=7)
        assert lm.first_token(last, cache, sampled, seeded_generator(7, "cpu"), False) == lm.first_token(
            last,
            cache,
            SamplingParams(temperature=1.0, first_candidates=0),
            seeded_generator(7, "cpu"),
            False,
        )
        closing += closes_chunk
        assert next(lm._sampled_tokens(ids, greedy, g, None)) == look  # the token loop's first
    assert overruled and closing  # both kinds of prompt were seen


def test_the_setting_is_a_whole_number_written_only_when_on():
    cfg = RetroConfig.from_preset("tiny")
    assert "inference_first_candidates" not in cfg.to_dict()
    on = cfg.replace(inference_first_candidates=5)
    assert on.to_dict()["inference_first_candidates"] == 5
    assert RetroConfig.from_dict(on.to_dict()) == on
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="inference_first_candidates must be a whole number >= 0"):
            cfg.replace(inference_first_candidates=bad)
        with pytest.raises(ValueError, match="first_candidates must be a whole number >= 0"):
            SamplingParams(first_candidates=bad)
