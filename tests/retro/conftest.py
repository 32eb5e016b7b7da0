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
    "copy+match3+bag6+neighbour+gate": tiny_config(
        copy_match_tokens=3, copy_bag_window=6, copy_neighbour_bag=True, copy_match_gate=True
    ),
    "copy, no prev": tiny_config(neighbour_prev_tokens=0),
    "no copy head": tiny_config(copy_head=False, neighbour_prev_tokens=1),
    "baseline": tiny_config(cca_layers=(), copy_head=False, neighbour_prev_tokens=0),
}


def random_word_table(
    vocab_size: int, dim: int = 8, rows: int = 50, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A word-meaning table (`retro.word_meaning`) for random tokens: about 2/3 of the ids are
    letters, half of those start a word; every one-token word and every two-token word (a word
    start, then a letter token that starts none) is listed, so random sequences hit it often."""
    g = torch.Generator().manual_seed(seed)
    letters = torch.rand(vocab_size, generator=g) < 0.67
    letters[0] = False  # padding
    starts = letters & (torch.rand(vocab_size, generator=g) < 0.5)
    first = letters.nonzero()[:, 0].tolist()
    inner = (letters & ~starts).nonzero()[:, 0].tolist()
    keys = sorted({*first, *(a + b * vocab_size for a in starts.nonzero()[:, 0].tolist() for b in inner)})
    return {
        "letters": letters,
        "starts": starts,
        "keys": torch.tensor(keys, dtype=torch.long),
        "rows": torch.randint(0, rows, (len(keys),), generator=g),
        "vectors": torch.randn(rows, dim, generator=g),
    }


def word_config(**overrides) -> RetroConfig:
    """tiny_config with word meanings on, shaped for `random_word_table(300)`."""
    table = random_word_table(300)
    return tiny_config(word_dim=8, word_rows=50, word_keys=len(table["keys"]), **overrides)


CONFIGS["copy+bag5+neighbour+words"] = word_config(copy_bag_window=5, copy_neighbour_bag=True)
CONFIGS["bag5+neighbour+words+meaning bag"] = word_config(
    copy_match_tokens=3, copy_bag_window=5, copy_neighbour_bag=True, copy_meaning_bag=True
)
CONFIGS["words, no copy head"] = word_config(copy_head=False)
CONFIGS["baseline+words"] = word_config(cca_layers=(), copy_head=False, neighbour_prev_tokens=0)


def make_model(config: RetroConfig, seed: int = 0) -> Retro:
    """A random model whose zero- and one-initialised parameters (null slots, biases, LayerNorms)
    are perturbed too, so that tests exercise them as a trained model would."""
    torch.manual_seed(seed)
    model = Retro(config).eval()
    if config.word_dim:
        model.word_meanings.load_table(
            random_word_table(config.vocab_size, config.word_dim, config.word_rows)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.train(SENTENCES, vocab_size=300)
