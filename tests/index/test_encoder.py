"""The fast chunk encoder equals stock SentenceTransformer.encode (fp32 on CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from index.encoder import EMBEDDING_DIM, load_sentence_transformer

TEXTS = [
    "Sea otters float on their backs.",
    "",
    "   leading and trailing spaces   ",
    "Mars has two moons. " * 40,  # longer than the 256-token limit: truncated the same way
    "Émoji 🎉, ünïcödé and 中文 text.",
    "a",
    "The violin has four strings tuned in perfect fifths.",
]


@pytest.fixture(scope="module")
def stock_model():
    return load_sentence_transformer("cpu")


def test_matches_sentence_transformers(encoder, stock_model):
    ours = encoder.encode(TEXTS, batch_size=3)
    reference = stock_model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), EMBEDDING_DIM)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(encoder):
    one_by_one = np.concatenate([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS, batch_size=64), one_by_one, atol=1e-5)


def test_empty_list(encoder):
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)


@pytest.mark.gpu
def test_fp16_gpu_matches_fp32_reference(stock_model):
    from index.encoder import ChunkEncoder

    gpu_encoder = ChunkEncoder("cuda")
    assert gpu_encoder.fp16
    reference = stock_model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(gpu_encoder.encode(TEXTS, batch_size=3), reference, atol=5e-3)


def test_rust_tokenization_equals_the_transformers_wrapper(encoder, stock_model):
    wrapper = stock_model[0].tokenizer(
        TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt"
    )
    ours = encoder.tokenize(TEXTS)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert ours[name].tolist() == wrapper[name].tolist(), name
