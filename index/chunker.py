"""Chunker: LM token ids of documents -> fixed-size chunks with their document and position.

This module owns the chunk layout the whole project shares: chunk i holds `chunk_size` token ids
(int32, the last chunk of a document right-padded with `pad_id`), `doc_index[i]` (which document)
and `position[i]` (its ordinal inside that document). Chunks of one document are contiguous, so
the continuation of chunk i is chunk i+1 when it belongs to the same document (RETRO section 2.3).
It receives a tokenizer object and never imports `retro`; it does not embed or index anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_DTYPE = np.int32


@dataclass
class ChunkArrays:
    tokens: np.ndarray  # [N, chunk_size] int32, pad_id-padded
    doc_index: np.ndarray  # [N] int64: index of the chunk's document in the list that was chunked
    position: np.ndarray  # [N] int32: 0 for a document's first chunk, 1 for its second, ...

    def __len__(self) -> int:
        return len(self.tokens)


def chunk_token_lists(token_lists: Sequence[Sequence[int]], chunk_size: int, pad_id: int) -> ChunkArrays:
    """Cuts each document's ids into chunks; a document with no tokens contributes no chunk."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    counts = np.array([-(-len(ids) // chunk_size) for ids in token_lists], dtype=np.int64)
    total = int(counts.sum())
    tokens = np.full((total, chunk_size), pad_id, dtype=TOKEN_DTYPE)
    flat = tokens.reshape(-1)
    row = 0
    for ids, count in zip(token_lists, counts, strict=True):
        if count:
            flat[row * chunk_size : row * chunk_size + len(ids)] = ids
            row += int(count)
    doc_index = np.repeat(np.arange(len(token_lists), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    position = (np.arange(total, dtype=np.int64) - np.repeat(starts, counts)).astype(np.int32)
    return ChunkArrays(tokens=tokens, doc_index=doc_index, position=position)


def tokenize_texts(tokenizer, texts: Sequence[str], batch_size: int = 256) -> list[list[int]]:
    """LM token ids per text, batched (`encode_batch` runs in parallel inside `tokenizers`)."""
    result: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        result.extend(tokenizer.encode_batch(list(texts[start : start + batch_size])))
    return result


def continuation_ids(doc_index: np.ndarray) -> np.ndarray:
    """[N] int64: i+1 where chunk i+1 continues chunk i's document, else -1."""
    doc_index = np.asarray(doc_index)
    result = np.full(len(doc_index), -1, dtype=np.int64)
    if len(doc_index) > 1:
        same = doc_index[1:] == doc_index[:-1]
        result[:-1][same] = np.nonzero(same)[0] + 1
    return result


def decode_chunks(tokenizer, chunk_tokens: np.ndarray, pad_id: int) -> list[str]:
    """The text of each chunk with its padding dropped (the encoder embeds this text)."""
    rows = [row[row != pad_id].tolist() for row in np.asarray(chunk_tokens)]
    return list(tokenizer.decode_batch(rows))
