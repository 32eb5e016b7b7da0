"""The checks `Retro` runs on what it is given before any of it reaches the network.

Each raises ValueError naming the shape or range that was expected, so that a caller's mistake
(float tokens, neighbours of the wrong chunk count, a full cache) reads as one, not as an index
error deep inside attention. Token ranges are checked only for CPU tensors: on a GPU the check
would wait for the device at every call.
"""

from __future__ import annotations

import torch

from retro.config import RetroConfig


def _described(value) -> str:
    return f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__


def check_tokens(cfg: RetroConfig, tokens, max_len: int | None = None) -> None:
    """tokens must be a LongTensor [B, T] with 1 <= T <= max_len (default: the model's max_seq_len)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be a LongTensor of shape [B, T]; got {_described(tokens)}")
    limit = cfg.max_seq_len if max_len is None else max_len
    if tokens.shape[1] > limit:
        raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds max_seq_len={limit}")
    if tokens.shape[1] == 0:
        raise ValueError("tokens must hold at least one position; got shape [B, 0]")
    if not tokens.is_cuda and tokens.numel() and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
        raise ValueError(f"token ids must lie in [0, {cfg.vocab_size}); got {tokens.min()}..{tokens.max()}")


def check_neighbours(cfg: RetroConfig, neighbours, batch: int, n_chunks: int | None) -> None:
    """neighbours must be a LongTensor [B, n_chunks, k, r] (a sequence's) or, with n_chunks None,
    [B, k, r] (one chunk's, in a decoding step), with 1 <= r <= the model's retrieved_len."""
    if n_chunks is None:
        expected = f"[B={batch}, k, r<={cfg.retrieved_len}]"
    else:
        expected = f"[B={batch}, {n_chunks}, k, r<={cfg.retrieved_len}]"
    dims = 3 if n_chunks is None else 4
    if not isinstance(neighbours, torch.Tensor) or neighbours.dtype != torch.long or neighbours.dim() != dims:
        raise ValueError(f"neighbours must be a LongTensor of shape {expected}; got {_described(neighbours)}")
    shape = tuple(neighbours.shape)
    lead = (batch,) if n_chunks is None else (batch, n_chunks)
    if shape[: len(lead)] != lead or shape[-2] < 1 or not 1 <= shape[-1] <= cfg.retrieved_len:
        raise ValueError(f"neighbours must have shape {expected}; got {list(shape)}")
    if (
        not neighbours.is_cuda
        and neighbours.numel()
        and (neighbours.min() < 0 or neighbours.max() >= cfg.vocab_size)
    ):
        raise ValueError(f"neighbour token ids must lie in [0, {cfg.vocab_size})")


def check_sequence(cfg: RetroConfig, tokens, neighbours, max_len: int | None = None) -> None:
    """The inputs of a full forward: tokens [B, T] and, for a retrieval model, neighbours of its
    T // m chunks or None (a no-retrieval model ignores neighbours)."""
    check_tokens(cfg, tokens, max_len)
    if neighbours is not None and cfg.uses_retrieval:
        check_neighbours(cfg, neighbours, tokens.shape[0], tokens.shape[1] // cfg.chunk_size)


def check_decode_step(cfg: RetroConfig, token, pos: int, max_len: int, neighbours) -> None:
    """One decoding step: token [B, 1] at position `pos` of a cache of `max_len` positions, and
    neighbours [B, k, r] only where this token closes a chunk."""
    check_tokens(cfg, token)
    if token.shape[1] != 1:
        raise ValueError(
            f"decode_step takes one token per sequence, shape [B] or [B, 1]; got {list(token.shape)}"
        )
    if pos >= max_len:
        raise ValueError(f"the cache is full: position {pos} reaches its max_len={max_len}")
    if neighbours is not None and cfg.uses_retrieval:
        if (pos + 1) % cfg.chunk_size:
            raise ValueError(
                f"neighbours arrive only with a chunk's last token; position {pos} does not close a chunk"
            )
        check_neighbours(cfg, neighbours, token.shape[0], None)
