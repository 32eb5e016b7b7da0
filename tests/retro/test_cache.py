"""KV-cached incremental decoding gives a full forward's log-probabilities, across chunk boundaries
where new neighbours arrive (fp32, atol 1e-4)."""

import pytest
import torch

from .conftest import CONFIGS, make_model
from .test_model import M, random_inputs


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("prompt_len", [1, 3, 4, 6, 8])
def test_prefill_then_steps_equal_full_forward(name, prompt_len):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    T = 19  # crosses four chunk boundaries (positions 3, 7, 11, 15) and ends mid-chunk
    tokens, neighbours = random_inputs(cfg, T=T)
    full = model(tokens, neighbours)
    logits, cache = model.prefill(tokens[:, :prompt_len], neighbours[:, : prompt_len // M])
    torch.testing.assert_close(logits, full[:, :prompt_len], atol=1e-4, rtol=0)
    for p in range(prompt_len, T):
        closes = (p + 1) % M == 0
        step = model.decode_step(tokens[:, p], cache, neighbours[:, (p + 1) // M - 1] if closes else None)
        torch.testing.assert_close(step, full[:, p], atol=1e-4, rtol=0, msg=f"position {p}")
    assert cache.pos == T


def test_decoding_without_neighbours_equals_forward_without_retrieval():
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, _ = random_inputs(cfg, B=1, T=11)
    full = model(tokens, None)
    _, cache = model.prefill(tokens[:, :2])
    for p in range(2, 11):
        torch.testing.assert_close(model.decode_step(tokens[:, p], cache), full[:, p], atol=1e-4, rtol=0)


def test_neighbours_off_a_boundary_and_a_full_cache_are_errors():
    cfg = CONFIGS["copy+prev2"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, T=5)
    _, cache = model.prefill(tokens[:, :5], neighbours[:, :1])
    with pytest.raises(ValueError, match="does not close a chunk"):
        model.decode_step(tokens[:, 0], cache, neighbours[:, 0])
    small = model.new_cache(2, max_len=6)
    model.prefill(tokens[:, :5], neighbours[:, :1], cache=small)
    model.decode_step(tokens[:, 0], small)
    with pytest.raises(ValueError, match="cache is full"):
        model.decode_step(tokens[:, 0], small)
    with pytest.raises(ValueError, match="fresh cache"):
        model.prefill(tokens, neighbours[:, :1], cache=small)
