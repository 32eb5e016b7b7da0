"""Whole-word meanings (`retro.word_meaning`): each position's key is its word so far, read from
tokens up to it only; the table lists every spelling of a word under its tokens; switched on over
a checkpoint the model starts as that checkpoint, learns, and keeps its table in the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retro.checkpoint import load_checkpoint
from retro.train import train
from retro.word_meaning import (
    WORD_WINDOW,
    WordMeanings,
    build_word_table,
    pack_key,
    recent_tokens,
    table_fingerprint,
    token_classes,
    word_keys,
)

from .conftest import random_word_table
from .test_train import FINE_TUNE_KW, CountingData, config_for, first_step_loss, trained_base

TEXT = "The capital of France is Paris.\nGold has the chemical symbol Au (gold). Mount Everest 8849"


def _reference_keys(ids: list[int], pieces: list[str], vocab: int) -> list[int]:
    """Word-so-far keys by a plain scan: back from each letter token to the token starting with a
    space, or to the one after a non-letter token; -1 when the window cannot see where it starts."""
    letters, starts = token_classes(pieces)
    out = []
    for t in range(len(ids)):
        if not letters[ids[t]]:
            out.append(-1)
            continue
        first = t
        while not starts[ids[first]] and first > 0 and letters[ids[first - 1]]:
            first -= 1
        length = t - first + 1
        # a word begun by a space is known whole within the window; one begun after a non-letter
        # token (or the sequence's start, padding) only if that token lies in the window too
        whole = length <= WORD_WINDOW if starts[ids[first]] else length < WORD_WINDOW
        out.append(pack_key(ids[first : t + 1], vocab) if whole else -1)
    return out


def test_every_position_gets_the_key_of_its_word_so_far(tokenizer):
    pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    ids = tokenizer.encode(TEXT)
    letters, starts = token_classes(pieces)
    assert any(not starts[b] and letters[a] and letters[b] for a, b in zip(ids, ids[1:], strict=False)), (
        "the text should hold words split into several tokens"
    )
    window = recent_tokens(torch.tensor([ids]), WORD_WINDOW, pad_id=0)
    got = word_keys(window, torch.from_numpy(letters), torch.from_numpy(starts), tokenizer.vocab_size)
    assert got[0].tolist() == _reference_keys(ids, pieces, tokenizer.vocab_size)
    assert (got[0] == -1).any() and (got[0] >= 0).any()


def test_a_key_reads_no_later_token(tokenizer):
    pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    letters, starts = (torch.from_numpy(a) for a in token_classes(pieces))
    ids = torch.tensor([tokenizer.encode(TEXT)])
    keys = word_keys(recent_tokens(ids, WORD_WINDOW, 0), letters, starts, tokenizer.vocab_size)
    for t in range(1, ids.shape[1]):
        changed = ids.clone()
        changed[0, t:] = torch.randint(1, tokenizer.vocab_size, (ids.shape[1] - t,))
        again = word_keys(recent_tokens(changed, WORD_WINDOW, 0), letters, starts, tokenizer.vocab_size)
        assert torch.equal(again[0, :t], keys[0, :t])


def _fake_encode(words: list[str]) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, "".join(words))))
    v = rng.normal(size=(len(words), 24))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_the_table_finds_a_listed_word_in_every_spelling_and_nothing_else(tokenizer):
    pieces = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    words = ["water", "level", "paris", "gold", "mountain", "celsius"]
    table = build_word_table(pieces, tokenizer.encode, words, _fake_encode, dim=4)
    assert table["vectors"].shape == (5, 4)  # "celsius" takes five tokens in every spelling: left out
    assert table["vectors"].norm(dim=1).mean() == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(table["keys"], table["keys"].sort().values)
    meanings = WordMeanings(tokenizer.vocab_size, 5, len(table["keys"]), 4, 8, 8)
    meanings.load_table(table)
    for text, word, spelled in (("the water level", "water", "water"), ("Water boils", "water", "Water"),
                                ("Gold, Paris.", "paris", " Paris")):  # fmt: skip
        ids = tokenizer.encode(text)
        vectors = meanings.vectors_for(recent_tokens(torch.tensor([ids]), WORD_WINDOW, 0))[0]
        end = next(t for t in range(len(ids)) if tokenizer.decode(ids[: t + 1]).endswith(spelled))
        torch.testing.assert_close(vectors[end], table["vectors"][words.index(word)])
        assert vectors[end + 1 :].abs().sum() == 0 or text != "Water boils"  # "boils" is not listed
    # a word not listed ("the", "and"), and punctuation, get nothing
    ids = torch.tensor([tokenizer.encode("the and .")])
    assert meanings.vectors_for(recent_tokens(ids, WORD_WINDOW, 0)).abs().sum() == 0


def test_a_table_of_another_shape_and_a_vocabulary_too_large_for_the_keys_are_refused():
    meanings = WordMeanings(300, 50, 10, 8, 8, 8)
    with pytest.raises(ValueError, match="word table keys"):
        meanings.load_table(random_word_table(300))
    with pytest.raises(ValueError, match="too large"):
        WordMeanings(60_000, 50, 10, 8, 8, 8)


KW = FINE_TUNE_KW


def test_switched_on_over_a_checkpoint_it_starts_as_the_checkpoint_learns_and_is_saved(tokenizer, tmp_path):
    base = trained_base(tmp_path / "base", tokenizer)
    config, data = base.config, base.data
    table = random_word_table(config.vocab_size)
    words = config.replace(word_dim=8, word_rows=50, word_keys=len(table["keys"]))
    loss = first_step_loss(tmp_path / "words", words, base, tokenizer, steps=4, word_table=table)
    assert loss == pytest.approx(base.loss, rel=1e-5)
    train(tmp_path / "words", words, data, tokenizer, steps=4, init_from=tmp_path / "base",
          word_table=table, **KW)  # fmt: skip
    model, _, meta = load_checkpoint(tmp_path / "words")
    assert meta["word_table"] == table_fingerprint(table)
    for name, value in table.items():  # the frozen table travels in the checkpoint, unchanged
        torch.testing.assert_close(
            getattr(model.word_meanings, name), value.to(getattr(model.word_meanings, name).dtype)
        )
    assert model.word_meanings.decoder_in.weight.abs().max() > 0  # started at zero, learned
    assert model.word_meanings.encoder_in.weight.abs().max() > 0
    # another table cannot resume the run
    other = {**table, "vectors": table["vectors"] + 1.0}
    with pytest.raises(ValueError, match="word_table"):
        train(tmp_path / "words", words, data, tokenizer, steps=6, init_from=tmp_path / "base",
              word_table=other, **KW)  # fmt: skip


def test_word_meanings_need_a_table_and_a_table_needs_them(tokenizer, tmp_path):
    config = config_for(tokenizer)
    data = CountingData(config)
    with pytest.raises(ValueError, match="word_dim > 0 needs a word_table"):
        train(tmp_path / "a", config.replace(word_dim=8, word_rows=50, word_keys=10), data, tokenizer,
              steps=1, **KW)  # fmt: skip
    with pytest.raises(ValueError, match="needs word_dim > 0"):
        train(tmp_path / "b", config, data, tokenizer, steps=1, word_table=random_word_table(300), **KW)
    with pytest.raises(ValueError, match="all 0 \\(off\\) or all > 0"):
        config.replace(word_dim=8)


def test_the_meaning_match_points_after_a_word_of_the_same_meaning_only():
    """A question's word (token 5) and a passage's other word of the same meaning (token 6): the
    copy head's meaning match scores the tokens within its window after 6, not those after a word
    of another meaning (7), nor tokens before 6; the question's own word needs no identity match."""
    from retro.copy_head import CopyHead

    from .conftest import tiny_config

    cfg = tiny_config(
        copy_bag_window=3, copy_meaning_bag=True, word_dim=2, word_rows=2, word_keys=3, retrieved_len=12
    )
    meanings = WordMeanings(cfg.vocab_size, 2, 3, 2, cfg.d_model, cfg.enc_d_model)
    every = torch.ones(cfg.vocab_size, dtype=torch.bool)
    every[0] = False
    table = {
        "letters": every,
        "starts": every,
        "keys": torch.tensor([5, 6, 7]),
        "rows": torch.tensor([0, 0, 1]),
    }
    meanings.load_table({**table, "vectors": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
    head = CopyHead(cfg)
    head.reset_parameters(12)
    with torch.no_grad():
        head.meaning_salience.bias.fill_(1.0)
    # the position ends with "... 5 9 9" (its last 3 words, and 3 more tokens for their word windows)
    query = torch.tensor([[[9, 9, 5, 9, 9, 9]]])  # (N=1, Tq=1, n = W + 3), newest first
    neighbour = torch.tensor([[20, 21, 6, 30, 31, 32, 33, 7, 40, 41, 42, 43]])  # k=1, r=12
    score = head.meaning_bag(query, neighbour, meanings)[0, 0]
    after_6 = [3, 4, 5]  # within the window of 3 tokens after token 6 (position 2)
    assert (score[after_6] > 0).all()
    assert (score[[0, 1, 2, 6]] == 0).all()  # before it, at it, beyond its window
    assert (score[8:] == 0).all()  # after 7: another meaning
    # salience 0 (the start of a fine-tune): no effect
    with torch.no_grad():
        head.meaning_salience.bias.zero_()
    assert head.meaning_bag(query, neighbour, meanings).abs().sum() == 0
