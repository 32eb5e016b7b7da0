"""A tiny stand-in for the chunk encoder in store tests: hashed bag of words, L2-normalised.

Texts sharing words get similar vectors, so search results are meaningful, and it costs no model
load (the crash test runs it in a subprocess). It counts the texts it encoded, so a resumed build
can be shown to skip finished shards.
"""

from __future__ import annotations

import re
import zlib

import numpy as np


class HashingEncoder:
    name = "test/hashing-bag-of-words"
    dim = 384

    def __init__(self) -> None:
        self.texts_encoded = 0

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        self.texts_encoded += len(texts)
        return out / np.maximum(norms, 1e-9)
