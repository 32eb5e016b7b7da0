"""Neighbour overlap (RETRO paper section 2.6): the share of a chunk's token 8-grams found in the
neighbours the model attended for it, on hand-computed cases; the bucket edges; and the
causality the buckets rely on: chunk u is predicted attending the neighbours retrieved with chunk
u - 1, which is what the model's losses show.
"""

from __future__ import annotations

import numpy as np
import pytest

from retro.evaluate import _retro_token_nll
from retro.overlap import (
    BUCKETS,
    NO_NEIGHBOURS,
    attended_neighbours,
    bucket_of,
    ngrams,
    overlap_share,
)
from tests.retro.conftest import make_model, tiny_config

PAD = 0


def test_ngrams_are_counted_with_repeats_and_never_span_padding():
    assert ngrams([1, 2, 3, 4], n=3) == [(1, 2, 3), (2, 3, 4)]
    assert ngrams([5, 5, 5, 5], n=3) == [(5, 5, 5), (5, 5, 5)]
    # padding cuts the row: (2, 3, 4) is not an n-gram of [2, 3, PAD, 4, ...]
    assert ngrams([2, 3, PAD, 4, 6, 7, PAD, PAD], n=3, pad_id=PAD) == [(4, 6, 7)]
    assert ngrams([1, 2], n=8) == []


def test_a_chunk_whose_8_grams_are_half_in_its_neighbour_is_in_the_50_percent_bucket():
    chunk = list(range(1, 16))  # 15 tokens: 8 8-grams, starting at tokens 1 .. 8
    # the neighbour holds tokens 1 .. 11 (then other text): the 8-grams starting at 1, 2, 3, 4
    neighbour = [[*range(1, 12), 90, 91, 92, 93, 94, 95, 96], [70] * 8 + [PAD] * 10]
    share = overlap_share(chunk, np.array(neighbour), n=8, pad_id=PAD)
    assert share == 4 / 8
    assert bucket_of(share) == "(25%, 50%]"
    # every 8-gram found: > 50%; one of 8: (0, 12.5%]; none: 0
    assert overlap_share(chunk, np.array([chunk + [PAD] * 4]), n=8) == 1.0
    assert overlap_share(chunk, np.array([[*range(1, 9), *[80] * 11]]), n=8) == 1 / 8
    assert bucket_of(1 / 8) == "(0%, 12.5%]"
    assert overlap_share(chunk, np.array([[80] * 19]), n=8) == 0.0


def test_an_8_gram_split_over_two_neighbours_or_around_padding_is_not_found():
    chunk = list(range(1, 9))  # one 8-gram
    two_rows = np.array([[1, 2, 3, 4, PAD, PAD, PAD, PAD], [5, 6, 7, 8, PAD, PAD, PAD, PAD]])
    assert overlap_share(chunk, two_rows, n=8, pad_id=PAD) == 0.0
    around_pad = np.array([[1, 2, 3, 4, PAD, 5, 6, 7, 8]])
    assert overlap_share(chunk, around_pad, n=8, pad_id=PAD) == 0.0
    # nothing is measured without neighbours, nor for a chunk of fewer than 8 real tokens
    assert overlap_share(chunk, None) is None
    assert overlap_share([PAD, PAD, 1, 2, 3, 4, 5, 6], two_rows, n=8, pad_id=PAD) is None
    assert bucket_of(None) == NO_NEIGHBOURS


def test_bucket_edges_follow_the_paper():
    assert BUCKETS == ("0%", "(0%, 12.5%]", "(12.5%, 25%]", "(25%, 50%]", "> 50%")
    cases = {0.0: "0%", 0.01: "(0%, 12.5%]", 0.125: "(0%, 12.5%]", 0.13: "(12.5%, 25%]"}
    cases |= {0.25: "(12.5%, 25%]", 0.26: "(25%, 50%]", 0.5: "(25%, 50%]", 0.51: "> 50%", 1.0: "> 50%"}
    assert {share: bucket_of(share) for share in cases} == cases
    with pytest.raises(ValueError):
        bucket_of(1.5)


def test_a_chunk_is_measured_against_the_previous_chunks_neighbours_not_its_own():
    """Chunk 1's own neighbours hold it word for word, but the model predicts it attending the
    neighbours retrieved with chunk 0, which hold none of it: its overlap is 0, not 100%."""
    chunks = [list(range(1, 9)), list(range(11, 19)), list(range(21, 29))]
    retrieved = [
        np.array([[31, 32, 33, 34, 35, 36, 37, 38, *chunks[2]]]),  # retrieved with chunk 0
        np.array([chunks[1] + chunks[2]]),  # retrieved with chunk 1: chunk 1 itself and chunk 2
        None,  # nothing was retrieved with the last chunk (no chunk attends it)
    ]
    attended = attended_neighbours(retrieved)
    assert attended[0] is None and attended[1] is retrieved[0] and attended[2] is retrieved[1]
    shares = [overlap_share(c, a, n=8) for c, a in zip(chunks, attended, strict=True)]
    assert shares == [None, 0.0, 1.0]
    assert [bucket_of(s) for s in shares] == [NO_NEIGHBOURS, "0%", "> 50%"]
    # a window of two chunks: chunk 2 starts a window and attends nothing
    assert attended_neighbours(retrieved, window_chunks=2) == [None, retrieved[0], None]


def test_the_model_predicts_a_chunk_from_the_neighbours_of_the_chunk_before_it():
    """What the buckets assume, checked on the network: changing the neighbours retrieved with
    chunk u changes the loss of every token of chunk u + 1 (its positions attend them) and of no
    token before it (later tokens see chunk u + 1's states through self-attention)."""
    config = tiny_config()  # chunks of m = 4 tokens, windows of 64
    model = make_model(config)
    m, r, k = config.chunk_size, config.retrieved_len, config.n_neighbours
    ids = list(range(5, 5 + 6 * m))  # 6 whole chunks: no left padding
    rng = np.random.default_rng(0)
    base = rng.integers(1, config.vocab_size, size=(6, k, r))

    def source(changed: int | None):
        def neighbours_for(chunks):
            found = base[: len(chunks)].copy()
            if changed is not None:
                found[changed] = rng.integers(1, config.vocab_size, size=(k, r))
            return found

        return neighbours_for

    reference, retrieved = _retro_token_nll(model, ids, source(None))
    assert len(retrieved) == 6 and retrieved[-1] is None  # the last chunk is never retrieved with
    assert all(np.array_equal(retrieved[u], base[u]) for u in range(5))
    for u in range(5):
        nll, _ = _retro_token_nll(model, ids, source(u))
        moved = {i + 1 for i in np.nonzero(~np.isclose(nll, reference, rtol=0, atol=1e-6))[0]}
        assert set(range((u + 1) * m, (u + 2) * m)) <= moved, (u, sorted(moved))
        assert min(moved) == (u + 1) * m, (u, sorted(moved))
