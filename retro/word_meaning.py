"""Whole-word meanings as a model input: MiniLM's vector of the word each token ends, looked up by
the word's token ids, projected into the decoder's and the neighbour encoder's inputs.

Why: the demo's 8,192-token vocabulary splits the words a question turns on (" p" "up" "il",
" m" "ent" "or", " may" "or"), and a reader trained on a few thousand made-up entities cannot
learn from them that "childhood" asks what "grew up in" states. MiniLM, the retriever's frozen
encoder, has such meanings for whole words: its vectors of the prompt's words point at the
passage segment that answers a held-out question form 67.7% of the time (chance 14.7%,
docs/results/cpu-demo-reading10-2026-12-06, `probe_word_semantics.py`).

The feature of position t is the meaning of the word *so far*: the tokens from the word's first
one (a token starting with a space, or the first letter token after a non-letter token) up to and
including t, at most `WORD_WINDOW` tokens. It reads tokens <= t only, so the decoder stays causal
and incremental decoding needs the last `WORD_WINDOW` tokens, nothing more. A token that is not
letters (digits, punctuation, bytes), a word whose first token the window cannot tell (longer than
the window; not begun by a space and as long as the window), and a word-so-far absent from the
table all get a zero vector.

The table (`build_word_table`) lists the whole words of MiniLM's WordPiece vocabulary in four
spellings (" word", " Word", "word", "Word"), each keyed by its token ids under the model's
tokenizer, with MiniLM's vector of the word reduced by PCA to `word_dim` dimensions; it is stored
in the checkpoint as buffers (frozen), so a loaded model needs neither MiniLM nor the word list.
Both projections start at zero: switching the feature on over a trained checkpoint leaves its
outputs unchanged until training moves them (`retro.train.ADDITIVE_FIELDS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WORD_WINDOW = 4  # tokens a word-so-far may span (8192**4 < 2**63: the key packs them in an int64)
SPELLINGS = (" {w}", " {W}", "{w}", "{W}")  # after a space, capitalised, after a newline or bracket


def token_classes(pieces: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The decoded text of every token id -> (is_letters, starts_word) bool arrays: a token of
    ASCII letters only, after at most one leading space; whether it starts with that space."""
    letters = np.zeros(len(pieces), dtype=bool)
    starts = np.zeros(len(pieces), dtype=bool)
    for i, piece in enumerate(pieces):
        body = piece[1:] if piece.startswith(" ") else piece
        letters[i] = bool(body) and body.isascii() and body.isalpha()
        starts[i] = letters[i] and piece.startswith(" ")
    return letters, starts


def recent_tokens(tokens: torch.Tensor, n: int, pad_id: int) -> torch.Tensor:
    """tokens (..., T) -> (..., T, n): each position's token, then the n - 1 before it (pad_id
    before the start)."""
    T = tokens.shape[-1]
    padded = F.pad(tokens, (n - 1, 0), value=pad_id)
    return torch.stack([padded[..., n - 1 - i : n - 1 - i + T] for i in range(n)], dim=-1)


def word_keys(window: torch.Tensor, letters: torch.Tensor, starts: torch.Tensor, vocab: int) -> torch.Tensor:
    """window (..., n): a position's token and the ones before it, newest first -> (...,) int64:
    the key of its word-so-far (`pack_key` of its token ids in reading order), or -1 where there is
    none (the token is not letters, or the word's first token lies outside the window)."""
    open_word = letters[window[..., 0]]  # still reading back through the word
    complete = torch.zeros_like(open_word)
    length = torch.zeros(window.shape[:-1], dtype=torch.long, device=window.device)
    for i in range(window.shape[-1]):
        token = window[..., i]
        complete = complete | (open_word & ~letters[token])  # a non-letter token before the word
        part = open_word & letters[token]
        length = length + part.long()
        complete = complete | (part & starts[token])  # a token starting with a space begins the word
        open_word = part & ~starts[token]
    key = torch.zeros_like(length)
    for i in range(window.shape[-1]):  # token i (newest first) is the word's token length - 1 - i
        place = (length - 1 - i).clamp_min(0)
        key = torch.where(i < length, key + window[..., i] * vocab**place, key)
    return torch.where(complete & (length > 0), key, -1)


def pack_key(ids: Sequence[int], vocab: int) -> int:
    """A word's token ids in reading order -> its table key (`word_keys`' packing)."""
    return sum(int(t) * vocab**j for j, t in enumerate(ids))


class WordMeanings(nn.Module):
    """The frozen word table (buffers) and the two learned projections of its vectors."""

    def __init__(self, vocab_size: int, rows: int, n_keys: int, dim: int, d_model: int, enc_d_model: int):
        super().__init__()
        if vocab_size**WORD_WINDOW >= 2**63:
            raise ValueError(
                f"word meanings pack {WORD_WINDOW} token ids in an int64 key: a vocabulary of {vocab_size} "
                f"tokens is too large (at most {int(2 ** (63 / WORD_WINDOW))})"
            )
        self.vocab_size = vocab_size
        self.register_buffer("letters", torch.zeros(vocab_size, dtype=torch.bool))
        self.register_buffer("starts", torch.zeros(vocab_size, dtype=torch.bool))
        self.register_buffer("keys", torch.full((n_keys,), -1, dtype=torch.long))  # sorted
        self.register_buffer("rows", torch.zeros(n_keys, dtype=torch.long))  # key -> vector row
        self.register_buffer("vectors", torch.zeros(rows, dim))
        self.decoder_in = nn.Linear(dim, d_model, bias=False)
        self.encoder_in = nn.Linear(dim, enc_d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Zero projections: the feature adds nothing until training moves them."""
        self.decoder_in.weight.zero_()
        self.encoder_in.weight.zero_()

    @torch.no_grad()
    def load_table(self, table: dict[str, torch.Tensor]) -> None:
        """Copies a table (`build_word_table`) into the buffers; its shapes must be the config's."""
        for name in ("letters", "starts", "keys", "rows", "vectors"):
            buffer = getattr(self, name)
            if table[name].shape != buffer.shape:
                raise ValueError(
                    f"word table {name}: shape {tuple(table[name].shape)}, model {tuple(buffer.shape)}"
                )
            buffer.copy_(table[name])

    def vectors_for(self, window: torch.Tensor) -> torch.Tensor:
        """window (..., WORD_WINDOW) newest first -> (..., dim): the word-so-far's vector, or 0."""
        key = word_keys(window, self.letters, self.starts, self.vocab_size)
        at = torch.searchsorted(self.keys, key.clamp_min(0)).clamp_max(len(self.keys) - 1)
        hit = (key >= 0) & (self.keys[at] == key)
        vectors = self.vectors[self.rows[at]].to(self.decoder_in.weight.dtype)
        return vectors * hit[..., None]

    def decoder_features(self, window: torch.Tensor) -> torch.Tensor:
        return self.decoder_in(self.vectors_for(window))

    def encoder_features(self, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
        """tokens (N, r): neighbour tokens -> (N, r, enc_d): each token's word-so-far meaning."""
        return self.encoder_in(self.vectors_for(recent_tokens(tokens, WORD_WINDOW, pad_id)))


def minilm_words(vocab: Sequence[str]) -> list[str]:
    """The whole words of a WordPiece vocabulary: ASCII letters, two or more, no "##" pieces."""
    return sorted({w for w in vocab if len(w) >= 2 and w.isascii() and w.isalpha() and w.islower()})


def build_word_table(
    pieces: Sequence[str],
    encode_ids: Callable[[str], list[int]],
    words: Sequence[str],
    encode_words: Callable[[list[str]], np.ndarray],
    dim: int,
) -> dict[str, torch.Tensor]:
    """The table `WordMeanings.load_table` takes.

    pieces: the decoded text of each token id; encode_ids: the model tokenizer's text -> ids;
    words: the words to list; encode_words: words -> their unit MiniLM vectors (n, 384). The vectors
    are centred and reduced to `dim` by PCA, then scaled to unit mean norm.
    """
    vocab = len(pieces)
    letters, starts = token_classes(pieces)
    keyed: dict[int, int] = {}  # key -> word row (the first word to claim a token sequence keeps it)
    rows: list[str] = []
    for word in words:
        row = None
        for spelling in SPELLINGS:
            ids = encode_ids(spelling.format(w=word, W=word.capitalize()))
            # a word not begun by a space is known whole only with the token before it in the window
            longest = WORD_WINDOW if spelling.startswith(" ") else WORD_WINDOW - 1
            if not ids or len(ids) > longest or not all(letters[i] for i in ids):
                continue
            if any(starts[i] for i in ids[1:]) or (spelling.startswith(" ") != bool(starts[ids[0]])):
                continue  # not one word to the runtime rule
            key = pack_key(ids, vocab)
            if key in keyed:
                continue
            if row is None:
                row = len(rows)
                rows.append(word)
            keyed[key] = row
    if not rows:
        raise ValueError("no word of the list is spelled by letter tokens of this tokenizer")
    raw = np.asarray(encode_words(rows), dtype=np.float64)
    centred = raw - raw.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reduced = np.zeros((len(rows), dim))
    components = vt[:dim]  # fewer than dim when there are fewer words: the rest stay zero
    reduced[:, : len(components)] = centred @ components.T
    reduced /= max(np.linalg.norm(reduced, axis=1).mean(), 1e-12)
    order = sorted(keyed)
    return {
        "letters": torch.from_numpy(letters),
        "starts": torch.from_numpy(starts),
        "keys": torch.tensor(order, dtype=torch.long),
        "rows": torch.tensor([keyed[k] for k in order], dtype=torch.long),
        "vectors": torch.from_numpy(reduced.astype(np.float32)),
    }


def table_fingerprint(table: dict[str, torch.Tensor]) -> str:
    """A short hash of a table's contents: kept in a run's meta, so a resume must use the same one."""
    digest = hashlib.sha256()
    for name in ("letters", "starts", "keys", "rows", "vectors"):
        digest.update(table[name].numpy().tobytes())
    return digest.hexdigest()[:16]
