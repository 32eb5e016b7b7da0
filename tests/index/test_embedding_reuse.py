"""Reusing an earlier index's embeddings: the same vectors as a fresh build, only new chunks encoded."""

from __future__ import annotations

import numpy as np
import pytest

from index.build import build_index
from index.corpus import Document
from index.embedding_reuse import ReusingEncoder
from index.layout import EMBEDDINGS, MANIFEST, read_json, resolve_version_dir
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder


def _embeddings(index) -> np.ndarray:
    version = resolve_version_dir(index)
    manifest = read_json(version / MANIFEST)
    return np.fromfile(version / EMBEDDINGS, dtype=np.float32).reshape(manifest["n_chunks"], -1)


def test_a_build_reusing_embeddings_equals_a_fresh_one_and_encodes_only_new_chunks(
    tmp_path, topic_documents, tokenizer
):
    first, fresh, reusing = tmp_path / "first", tmp_path / "fresh", tmp_path / "reusing"
    build_index(topic_documents[:6], first, tokenizer, HashingEncoder(), chunk_size=8)
    new = [Document("new/owl", "Owls turn their heads far round and hunt mice at night.", "test")]
    corpus = topic_documents[2:] + new  # a subset of the first build plus a new document
    build_index(corpus, fresh, tokenizer, HashingEncoder(), chunk_size=8)
    inner = HashingEncoder()
    encoder = ReusingEncoder(inner, first, tokenizer)
    build_index(corpus, reusing, tokenizer, encoder, chunk_size=8)
    np.testing.assert_allclose(_embeddings(reusing), _embeddings(fresh), rtol=0, atol=1e-6)
    n_new = int(read_json(resolve_version_dir(fresh) / MANIFEST)["n_chunks"]) - encoder.reused
    assert encoder.reused > 0 and inner.texts_encoded == n_new == encoder.encoded
    assert read_json(resolve_version_dir(reusing) / MANIFEST)["encoder"] == HashingEncoder.name


def test_reuse_refuses_another_tokenizer_or_encoder(tmp_path, topic_documents, tokenizer):
    build_index(topic_documents, tmp_path / "first", tokenizer, HashingEncoder(), chunk_size=8)
    other = Tokenizer.train([d.text for d in topic_documents] * 3, vocab_size=280)
    with pytest.raises(ValueError, match="another tokenizer"):
        ReusingEncoder(HashingEncoder(), tmp_path / "first", other)

    class Renamed(HashingEncoder):
        name = "test/another-encoder"

    with pytest.raises(ValueError, match="its encoder is"):
        ReusingEncoder(Renamed(), tmp_path / "first", tokenizer)
