"""retro: a compact decoder with chunked cross-attention over retrieved neighbours (RETRO).

This package owns the model (config, network, tokenizer, generation, checkpoints), its training
and evaluation, and the command line. It depends on `index` for retrieval and never on `service`.
"""

from retro.config import PRESETS, RetroConfig

__all__ = ["PRESETS", "RetroConfig"]
