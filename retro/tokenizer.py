"""The LM tokenizer: byte-level BPE trained with Hugging Face `tokenizers`, saved as one JSON file.

Byte-level means any UTF-8 text round-trips exactly (newlines, case, emoji, leading spaces).
Id 0 is `<pad>` and id 1 is `<eos>` in every tokenizer this module trains, which is what
`RetroConfig.pad_id` assumes. `index` receives this object and uses only `encode`, `decode`,
`encode_batch`, `vocab_size`, `pad_id` and `fingerprint`; it never imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

PAD = "<pad>"
EOS = "<eos>"
SPECIAL_TOKENS = (PAD, EOS)
FILE_NAME = "tokenizer.json"


class Tokenizer:
    """Byte-level BPE with `<pad>` = 0 and `<eos>` = 1."""

    def __init__(self, hf: HFTokenizer):
        self._hf = hf
        pad, eos = hf.token_to_id(PAD), hf.token_to_id(EOS)
        if pad is None or eos is None:
            raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}")
        self.pad_id: int = pad
        self.eos_id: int = eos

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Tokenizer:
        """Trains on an iterator of texts (about a second per 5 MB on one core)."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (all bytes + specials)")
        hf = HFTokenizer(models.BPE())
        # use_regex keeps GPT-2's word splitting; add_prefix_space=False keeps decode(encode(t)) == t.
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Loads `tokenizer.json`, or the one inside a folder (a checkpoint or an index version)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer at {path}")
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{path} is not a valid tokenizer file: {e}") from e

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / FILE_NAME
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    # --- use ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return self._hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def decode_batch(self, batch: Sequence[Iterable[int]], skip_special: bool = True) -> list[str]:
        return self._hf.decode_batch(
            [[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special
        )

    def to_json(self) -> str:
        return self._hf.to_str()

    @property
    def fingerprint(self) -> str:
        """sha256 of the serialised tokenizer: an index built with another tokenizer is refused."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]})"
