"""Neighbour overlap of an evaluated chunk (RETRO paper section 2.6): copying told from modelling.

A chunk's overlap is the share of its token n-grams (8-grams of the LM tokenizer's ids, as the
paper counts them with its own tokenizer; counted with repeats; padding excluded, and no n-gram
spans a pad) that occur in the neighbours the model attended while predicting it. By RETRO's
causality (`retro.cca`) those are the neighbours retrieved with the *previous* chunk: chunk u's
tokens are predicted by positions u*m - 1 .. (u+1)*m - 2, which attend the neighbours of chunk
u - 1. The first chunk attends none, and neither does the first chunk of each window when a long
document is scored in windows without carried context (`retro.evaluate`). Chunks are then
bucketed as in the paper: 0, (0, 12.5%], (12.5%, 25%], (25%, 50%], > 50%.

This module is the arithmetic only (token lists and numpy arrays in, shares and bucket names out);
`retro.evaluate.bits_per_byte_by_overlap` scores models on the bucketed chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NGRAM = 8
# (name, upper bound of the share): a share goes to the first bucket whose bound it does not exceed
BUCKET_BOUNDS = (("0%", 0.0), ("(0%, 12.5%]", 0.125), ("(12.5%, 25%]", 0.25), ("(25%, 50%]", 0.5))
BUCKETS = (*(name for name, _ in BUCKET_BOUNDS), "> 50%")
NO_NEIGHBOURS = "no neighbours attended"


def ngrams(
    tokens: Sequence[int] | np.ndarray, n: int = NGRAM, pad_id: int | None = 0
) -> list[tuple[int, ...]]:
    """The token n-grams of `tokens` in order, with repeats, none spanning a `pad_id` token."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out: list[tuple[int, ...]] = []
    run: list[int] = []
    for token in [int(t) for t in np.asarray(tokens).reshape(-1)] + [None]:
        if token is None or token == pad_id:
            out.extend(tuple(run[i : i + n]) for i in range(len(run) - n + 1))
            run = []
        else:
            run.append(token)
    return out


def overlap_share(
    chunk: Sequence[int] | np.ndarray,
    neighbours: np.ndarray | None,
    n: int = NGRAM,
    pad_id: int | None = 0,
) -> float | None:
    """The share of `chunk`'s n-grams found in any row of `neighbours` ([k, r] token ids; each row
    on its own, so no n-gram spans two neighbours). None when nothing is measured: no neighbours,
    or a chunk without an n-gram (fewer than n tokens in a row that are not padding)."""
    grams = ngrams(chunk, n, pad_id)
    if neighbours is None or not grams:
        return None
    rows = np.asarray(neighbours)
    found = {g for row in rows.reshape(-1, rows.shape[-1]) for g in ngrams(row, n, pad_id)}
    return sum(g in found for g in grams) / len(grams)


def bucket_of(share: float | None) -> str:
    """The paper's bucket of an overlap share; `NO_NEIGHBOURS` for None (nothing was attended)."""
    if share is None:
        return NO_NEIGHBOURS
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"an overlap share is in [0, 1], got {share}")
    for name, bound in BUCKET_BOUNDS:
        if share <= bound:
            return name
    return BUCKETS[-1]


def attended_neighbours(
    retrieved: Sequence[np.ndarray | None], window_chunks: int | None = None
) -> list[np.ndarray | None]:
    """retrieved[u], the neighbours retrieved with chunk u (None: none) -> what chunk u is
    predicted attending: retrieved[u - 1]; None for chunk 0 and, with `window_chunks`, for the
    first chunk of every window of that many chunks (the model starts afresh there)."""
    attended: list[np.ndarray | None] = []
    for u in range(len(retrieved)):
        window_start = u == 0 or (window_chunks is not None and u % window_chunks == 0)
        attended.append(None if window_start else retrieved[u - 1])
    return attended
