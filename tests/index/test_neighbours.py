"""Precomputed training neighbours: never the chunk's own document; accessors for the trainer."""

from __future__ import annotations

import numpy as np
import pytest

from index.build import build_index
from index.corpus import Document
from index.neighbours import TrainingChunks, precompute_neighbours
from index.store import IndexStore

CHUNK = 16


@pytest.fixture()
def index_dir(tmp_path, topic_documents, tokenizer, hashing_encoder):
    # Near-duplicates in other documents, so the nearest chunk is often another document's copy.
    documents = topic_documents + [
        Document(f"copy/{d.doc_id}", d.text.upper() + " " + d.text, "test") for d in topic_documents[:4]
    ]
    build_index(documents, tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK, shard_size=8)
    return tmp_path / "ix"


def test_neighbours_never_come_from_the_same_document(index_dir):
    path = precompute_neighbours(index_dir, k=3, batch_size=5)
    assert path.name == "neighbours-k3.npy"
    chunks = TrainingChunks(index_dir, k=3)
    table = np.asarray(chunks.neighbours)
    assert table.dtype == np.int64 and table.shape == (chunks.n_chunks, 3)
    assert (table >= 0).all()  # 14 documents: every chunk has 3 chunks of other documents
    own = np.asarray(chunks.doc_index)[:, None]
    assert (np.asarray(chunks.doc_index)[table] != own).all()


def test_neighbours_are_the_nearest_other_document_chunks(index_dir):
    precompute_neighbours(index_dir, k=2)
    chunks = TrainingChunks(index_dir, k=2)
    embeddings = np.fromfile(chunks.version_dir / "embeddings.f32", dtype=np.float32).reshape(
        chunks.n_chunks, -1
    )
    similarity = embeddings @ embeddings.T
    doc_index = np.asarray(chunks.doc_index)
    similarity[doc_index[:, None] == doc_index[None, :]] = -np.inf
    best = np.asarray(chunks.neighbours)[:, 0]
    np.testing.assert_allclose(
        similarity[np.arange(chunks.n_chunks), best], similarity.max(axis=1), atol=1e-5
    )


def test_single_document_has_no_neighbours(tmp_path, tokenizer, hashing_encoder):
    text = "One lonely document that is long enough to make several chunks of sixteen tokens each, or more."
    build_index([Document("only", text)], tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK)
    precompute_neighbours(tmp_path / "ix", k=2)
    chunks = TrainingChunks(tmp_path / "ix", k=2)
    assert chunks.n_chunks > 1 and (np.asarray(chunks.neighbours) == -1).all()


def test_training_accessors(index_dir, tokenizer):
    chunks = TrainingChunks(index_dir)
    assert chunks.neighbours is None and chunks.n_precomputed == 0
    assert chunks.tokens.shape == (chunks.n_chunks, CHUNK) and chunks.chunk_size == CHUNK
    mars = chunks.doc_chunks("space/mars")
    assert len(mars) >= 2 and chunks.position[mars].tolist() == list(range(len(mars)))
    assert (
        chunks.continuation[mars[:-1]].tolist() == mars[1:].tolist() and chunks.continuation[mars[-1]] == -1
    )
    pairs = chunks.neighbour_tokens(np.array([[mars[0], -1]]))
    assert pairs.shape == (1, 2, 2 * CHUNK) and pairs.dtype == np.int64
    np.testing.assert_array_equal(
        pairs[0, 0], np.concatenate([chunks.tokens[mars[0]], chunks.tokens[mars[1]]])
    )
    assert (pairs[0, 1] == tokenizer.pad_id).all()
    assert chunks.pad_id == tokenizer.pad_id and chunks.doc_ids[1] == "space/mars"
    with pytest.raises(ValueError, match="precompute_neighbours"):
        TrainingChunks(index_dir, k=5)
    with pytest.raises(ValueError, match="out of range"):
        chunks.neighbour_tokens(np.array([chunks.n_chunks]))


def test_live_additions_are_visible_to_training_views(index_dir, tokenizer, hashing_encoder):
    precompute_neighbours(index_dir, k=2)
    store = IndexStore.open(index_dir, tokenizer, hashing_encoder)
    store.add_documents([Document("late/doc", "A document added after the neighbours were computed.")])
    chunks = TrainingChunks(index_dir, k=2)
    assert chunks.n_chunks == store.n_chunks and chunks.n_precomputed < chunks.n_chunks


def test_never_from_leaves_training_material_out_of_a_table_of_its_own(index_dir):
    """A table for training without Q&A-like documents: none of them is ever a neighbour, the
    nearest eligible chunk is still found exactly, and the plain table is untouched."""
    plain = precompute_neighbours(index_dir, k=2)
    before = np.load(plain).copy()
    path = precompute_neighbours(index_dir, k=2, never_from=("copy/",))
    assert path.name.startswith("neighbours-k2-not-") and path != plain
    np.testing.assert_array_equal(np.load(plain), before)
    with pytest.raises(ValueError, match="never_from"):
        TrainingChunks(index_dir, k=2, never_from=("other/",))  # no table for that set was computed
    chunks = TrainingChunks(index_dir, k=2, never_from=("copy/",))
    doc_index = np.asarray(chunks.doc_index)
    is_copy = np.array([d.startswith("copy/") for d in chunks.doc_ids])
    table = np.asarray(chunks.neighbours)
    assert (table >= 0).all() and not is_copy[doc_index[table]].any()
    assert is_copy[doc_index[np.load(plain)]].any()  # the near-duplicates were neighbours before
    embeddings = np.fromfile(chunks.version_dir / "embeddings.f32", dtype=np.float32).reshape(
        chunks.n_chunks, -1
    )
    similarity = embeddings @ embeddings.T
    similarity[(doc_index[:, None] == doc_index[None, :]) | is_copy[doc_index][None, :]] = -np.inf
    np.testing.assert_allclose(
        similarity[np.arange(chunks.n_chunks), table[:, 0]], similarity.max(axis=1), atol=1e-5
    )


def test_wide_queries_find_the_passage_a_chunk_before_names(
    tmp_path, topic_documents, tokenizer, hashing_encoder
):
    """With query_chunks, a reading document's chunk is queried with the chunks before it as well:
    a chunk that only chats finds the passage its document named a chunk earlier (as a served long
    prompt does), while the plain and one-chunk tables are untouched and other chunks keep theirs."""
    chat = "sea otters float on their backs and crack shellfish open with stones "
    documents = [
        Document("p/zorbland", "Zorbland Zorbland Zorbland Zorbland capital Quibbletown", "test"),
        Document("p/otters", chat * 2, "test"),
        *topic_documents,
        Document("qa/long", "Zorbland " * 12 + chat * 3, "test"),
    ]
    build_index(documents, tmp_path / "ix", tokenizer, hashing_encoder, chunk_size=CHUNK)
    narrow = precompute_neighbours(tmp_path / "ix", k=2, never_from=("qa/",))
    before = np.load(narrow).copy()
    wide = precompute_neighbours(
        tmp_path / "ix", k=2, never_from=("qa/",), query_chunks=3, encoder=hashing_encoder
    )
    assert wide.name.endswith("-q3.npy") and wide != narrow
    np.testing.assert_array_equal(np.load(narrow), before)
    chunks = TrainingChunks(tmp_path / "ix", k=2, never_from=("qa/",), query_chunks=3)
    doc_index, tokens = np.asarray(chunks.doc_index), np.asarray(chunks.tokens)
    zorbland, qa = chunks.doc_ids.index("p/zorbland"), chunks.doc_ids.index("qa/long")
    named = [tokenizer.decode(row.tolist()).count("Zorbland") > 0 for row in tokens]
    rows = np.nonzero(doc_index == qa)[0]
    # the first chunk after the name that no longer holds it: its own text only chats
    chatting = next(
        int(r) for r, prev in zip(rows[1:], rows[:-1], strict=True) if named[prev] and not named[r]
    )
    assert doc_index[before[chatting, 0]] != zorbland  # the chunk alone finds the otters
    table = np.asarray(chunks.neighbours)
    assert doc_index[table[chatting, 0]] == zorbland
    outside = doc_index != qa  # every other document's chunks keep their one-chunk query
    np.testing.assert_array_equal(table[outside], before[outside])
    with pytest.raises(ValueError, match="needs never_from"):
        precompute_neighbours(tmp_path / "ix", k=2, query_chunks=2, encoder=hashing_encoder)
    with pytest.raises(ValueError, match="query_chunks=2"):
        TrainingChunks(tmp_path / "ix", k=2, never_from=("qa/",), query_chunks=2)
