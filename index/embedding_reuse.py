"""Embeddings reused from an earlier index: a build re-embeds only the chunks it has not seen.

The encoder is 99% of a CPU build's time (docs/index_build.md), and most rebuilds change a small
part of a corpus, or build a second index from a subset of a first one's documents (the demo's
serving index is its training index without the question-and-answer documents). `ReusingEncoder`
wraps the build's encoder: a chunk whose text is a chunk text of the reused version (same
encoder, same tokenizer, so the same text gives the same vector) takes that version's stored
embedding; only the rest go through the encoder. The result is the array a fresh build computes,
up to the encoder's own batch-to-batch rounding.

Vectors of the torch and ONNX fp32 backends are interchangeable (the same to ~1e-7); those of
the int8 backend are not, so reuse refuses to mix int8 with fp32 in either direction (the
manifest's `encoder_backend`; absent means torch).

This module owns the lookup only; `index.build.build_index` is unchanged (it sees an encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.chunker import decode_chunks
from index.encoder import embedding_precision
from index.layout import MANIFEST, read_json, resolve_version_dir
from index.version import VersionArrays


class ReusingEncoder:
    """`encoder` with a cache of (chunk text -> embedding) read from another index's version."""

    def __init__(self, encoder, index: str | Path, tokenizer):
        version_dir = resolve_version_dir(index)
        manifest = read_json(version_dir / MANIFEST)
        if manifest.get("encoder") != encoder.name:
            raise ValueError(
                f"cannot reuse embeddings of {version_dir}: its encoder is {manifest.get('encoder')!r}, "
                f"this build's {encoder.name!r}"
            )
        theirs, ours = manifest.get("encoder_backend"), getattr(encoder, "backend", None)
        if embedding_precision(theirs) != embedding_precision(ours):
            raise ValueError(
                f"cannot reuse embeddings of {version_dir}: they are {embedding_precision(theirs)} "
                f"(encoder backend {theirs or 'torch'}), this build's {embedding_precision(ours)} "
                f"({ours}); int8 and fp32 vectors differ, use the same --encoder-backend"
            )
        if manifest.get("tokenizer_fingerprint") != tokenizer.fingerprint:
            raise ValueError(
                f"cannot reuse embeddings of {version_dir}: it was chunked with another tokenizer"
            )
        self.encoder, self.name, self.dim = encoder, encoder.name, encoder.dim
        if ours is not None:  # the build records the backend of the vectors it computes
            self.backend = ours
        self.source = version_dir
        arrays = VersionArrays.open(version_dir, manifest)
        self._embeddings = arrays.embeddings
        texts = decode_chunks(tokenizer, arrays.tokens, manifest["pad_id"])
        self._row_of_text = {text: row for row, text in enumerate(texts)}
        self.reused = 0  # chunks taken from the other version so far
        self.encoded = 0  # chunks sent to the encoder so far

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        rows = [self._row_of_text.get(text, -1) for text in texts]
        found = [i for i, row in enumerate(rows) if row >= 0]
        missing = [i for i, row in enumerate(rows) if row < 0]
        if found:
            out[found] = self._embeddings[[rows[i] for i in found]]
        if missing:
            out[missing] = self.encoder.encode([texts[i] for i in missing], batch_size=batch_size)
        self.reused += len(found)
        self.encoded += len(missing)
        return out
