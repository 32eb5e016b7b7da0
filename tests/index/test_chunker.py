"""Chunker: fixed-size padded chunks, document index, position and continuation."""

from __future__ import annotations

import numpy as np
import pytest

from index.chunker import chunk_token_lists, continuation_ids, decode_chunks, tokenize_texts


def test_chunks_are_padded_and_located():
    chunks = chunk_token_lists([[5, 6, 7, 8, 9], [], [3], [1, 2, 3, 4]], chunk_size=2, pad_id=0)
    assert chunks.tokens.dtype == np.int32 and chunks.tokens.shape == (6, 2)
    assert chunks.tokens.tolist() == [[5, 6], [7, 8], [9, 0], [3, 0], [1, 2], [3, 4]]
    assert chunks.doc_index.tolist() == [0, 0, 0, 2, 3, 3]
    assert chunks.position.tolist() == [0, 1, 2, 0, 0, 1]
    assert continuation_ids(chunks.doc_index).tolist() == [1, 2, -1, -1, 5, -1]


def test_empty_input_and_bad_chunk_size():
    chunks = chunk_token_lists([], chunk_size=4, pad_id=0)
    assert chunks.tokens.shape == (0, 4) and len(chunks) == 0
    assert continuation_ids(chunks.doc_index).tolist() == []
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_token_lists([[1]], chunk_size=0, pad_id=0)


def test_decoded_chunks_reassemble_the_text(tokenizer):
    text = "Sea otters float on their backs. Émoji 🎉 and\nnewlines survive."
    chunks = chunk_token_lists(tokenize_texts(tokenizer, [text]), chunk_size=16, pad_id=tokenizer.pad_id)
    assert len(chunks) >= 2
    rejoined = tokenizer.decode(chunks.tokens[chunks.tokens != tokenizer.pad_id].tolist())
    assert rejoined == text
    assert all(t for t in decode_chunks(tokenizer, chunks.tokens, tokenizer.pad_id))
