"""The first generated token's copy bias (`RetroConfig.inference_first_copy_bias`): the copy head's
null slot lowered for the prompt's last position only, so a generation begins from the neighbours;
scoring, the cache and every later token are the model's own. Generation reading it from the config,
batched and alone: tests/retro/test_batch_decode.py."""

import pytest
import torch

from .conftest import CONFIGS, make_model
from .test_model import M, random_inputs

COPYING = [name for name, cfg in CONFIGS.items() if cfg.copy_head and cfg.cca_layers]


@pytest.mark.parametrize("name", COPYING)
@pytest.mark.parametrize("prompt_len", [4, 6, 8, 11])
def test_the_bias_moves_only_the_last_positions_mass_from_the_vocabulary_to_the_neighbours(name, prompt_len):
    cfg = CONFIGS[name]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, T=prompt_len)
    with torch.no_grad():
        plain, _ = model.prefill(tokens, neighbours)
        biased, _ = model.prefill(tokens, neighbours, last_copy_bias=2.0)
    torch.testing.assert_close(biased[:, :-1], plain[:, :-1], atol=0, rtol=0)  # earlier positions: as scored
    torch.testing.assert_close(biased[:, -1].exp().sum(-1), torch.ones(2), atol=1e-5, rtol=0)
    for b in range(2):
        # the last position attends the neighbours of the last complete chunk
        present = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        present[neighbours[b, prompt_len // M - 1].flatten()] = True
        ratio = (biased[b, -1] - plain[b, -1]).exp()
        # every token the neighbours lack keeps its share of the vocabulary's mass, scaled alike (< 1)
        absent = ratio[~present]
        torch.testing.assert_close(absent, absent[0].expand_as(absent), atol=1e-4, rtol=1e-4)
        assert absent[0] < 1
        # and the neighbours' tokens gain: each by more than the absent ones, together in mass
        assert (ratio[present] > absent[0]).all()
        assert biased[b, -1].exp()[present].sum() > plain[b, -1].exp()[present].sum()


def test_a_large_bias_makes_the_first_token_a_neighbours_and_leaves_the_cache_alone():
    cfg = CONFIGS["copy+match3+bag6+neighbour"]
    model = make_model(cfg)
    tokens, neighbours = random_inputs(cfg, T=8, seed=2)
    with torch.no_grad():
        model.copy_head.null.bias.fill_(10.0)  # a model sure of its vocabulary: it copies nothing
        plain, plain_cache = model.prefill(tokens, neighbours)
        biased, biased_cache = model.prefill(tokens, neighbours, last_copy_bias=60.0)
        for b in range(2):
            shown = set(neighbours[b, 1].flatten().tolist())
            assert int(plain[b, -1].argmax()) not in shown  # its own choice
            assert int(biased[b, -1].argmax()) in shown
        step = torch.tensor([5, 9])
        torch.testing.assert_close(
            model.decode_step(step, biased_cache), model.decode_step(step, plain_cache), atol=0, rtol=0
        )
    with pytest.raises(ValueError, match="last_copy_bias must be >= 0"):
        model.prefill(tokens, neighbours, last_copy_bias=-1.0)
