"""Tiny models and a tiny tokenizer shared by the model-core tests (milliseconds on a CPU)."""

import pytest
import torch

from retro.config import RetroConfig
from retro.model import Retro
from retro.tokenizer import Tokenizer

SENTENCES = [
    "The capital of France is Paris.",
    "Gold has the chemical symbol Au.",
    "Mount Everest is the highest mountain on Earth.",
    "Water boils at one hundred degrees Celsius at sea level.",
] * 20


def tiny_config(**overrides) -> RetroConfig:
    base = dict(
        vocab_size=300, d_model=32, n_layers=3, n_heads=2, d_ff=64, max_seq_len=64, chunk_size=4,
        n_neighbours=2, retrieved_len=8, cca_layers=(1, 2), enc_layers=1, enc_d_model=16, enc_n_heads=2,
    )  # fmt: skip
    base.update(overrides)
    return RetroConfig(**base)


# Implementations x switches the causality and cache tests run over.
CONFIGS = {
    "copy+prev2": tiny_config(),
    "copy+prev2+match3": tiny_config(copy_match_tokens=3),
    "copy+match3+bag6": tiny_config(copy_match_tokens=3, copy_bag_window=6),
    "copy+bag5, no n-gram": tiny_config(copy_bag_window=5),
    "copy+match3+bag6+neighbour": tiny_config(
        copy_match_tokens=3, copy_bag_window=6, copy_neighbour_bag=True
    ),
    "copy, no prev": tiny_config(neighbour_prev_tokens=0),
    "no copy head": tiny_config(copy_head=False, neighbour_prev_tokens=1),
    "baseline": tiny_config(cca_layers=(), copy_head=False, neighbour_prev_tokens=0),
}


def make_model(config: RetroConfig, seed: int = 0) -> Retro:
    """A random model whose zero- and one-initialised parameters (null slots, biases, LayerNorms)
    are perturbed too, so that tests exercise them as a trained model would."""
    torch.manual_seed(seed)
    model = Retro(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(SENTENCES, vocab_size=300)
