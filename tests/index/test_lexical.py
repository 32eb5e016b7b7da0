"""Lexical (BM25) search and hybrid retrieval: the exact word finds its chunk where vectors cannot."""

from __future__ import annotations

import numpy as np
import pytest

from index.build import build_index
from index.corpus import Document
from index.lexical import LexicalIndex, reciprocal_rank_fusion, words
from index.retriever import Retriever
from index.store import IndexStore


class BlindEncoder:
    """Every text gets the same vector: dense search cannot tell chunks apart (ties in index order),
    so whatever a hybrid search gets right, its lexical half found."""

    name = "test/blind"
    dim = 8

    def encode(self, texts, batch_size=None):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def test_bm25_prefers_the_rare_word_and_follows_additions():
    index = LexicalIndex(
        [
            "The town was founded in 1801 on a river.",
            "The town was founded in 1920 by a miller.",
            "Mars has two small moons, Phobos and Deimos.",
        ]
    )
    ids, scores = index.search("Which moons orbit Mars?", 2)
    assert ids[0] == 2 and scores[0] > 0
    assert len(index.search("nothing matches this", 3)[0]) == 0
    index.add(["Stoqueirirk was founded in 1925."])
    assert index.search("When was Stoqueirirk founded?", 1)[0].tolist() == [3]
    # a filter applies before the top n are taken
    ids, _ = index.search("Stoqueirirk, founded in 1801?", 2, allowed=lambda c: c != 3)
    assert ids.tolist() == [0]
    assert words("Up-to-date, Zoë!") == ["up", "to", "date", "zoë"]


def test_reciprocal_rank_fusion_rewards_agreement_and_skips_padding():
    fused = reciprocal_rank_fusion([[5, 1, 2, -1], [2, 7, -1]], 3)
    assert [item for item, _ in fused] == [2, 5, 1]  # 2 is in both lists
    assert fused[0][1] == pytest.approx(1 / 63 + 1 / 61)


@pytest.fixture()
def blind_store(tmp_path, tokenizer):
    documents = [
        Document(f"filler/{i}", f"Filler text number {i} about nothing in particular.", "test")
        for i in range(6)
    ] + [
        Document("town/stoqueirirk", "Stoqueirirk is a market town. It was founded in 1925.", "test"),
        Document("town/stoquerik", "Stoquerik is a market town. It was founded in 1901.", "test"),
    ]
    encoder = BlindEncoder()
    build_index(documents, tmp_path / "ix", tokenizer, encoder, chunk_size=16)
    return IndexStore.open(tmp_path / "ix", tokenizer, encoder)


def test_hybrid_retrieval_finds_the_named_chunk_that_dense_cannot(blind_store):
    query = ["In which year was Stoqueirirk founded?"]
    dense = Retriever(blind_store).search(query, k=2)[0]
    assert "town/stoqueirirk" not in dense.doc_ids  # ties: the first chunks of the index
    hybrid = Retriever(blind_store, mode="hybrid").search(query, k=2)[0]
    assert "town/stoqueirirk" in hybrid.doc_ids  # BM25's first, fused with a dense ranking of ties
    found = hybrid.doc_ids.index("town/stoqueirirk")
    assert hybrid.tokens.shape == dense.tokens.shape
    assert "1925" in blind_store.tokenizer.decode([t for t in hybrid.tokens[found].tolist() if t])
    # exclusion holds for the lexical half too
    excluded = Retriever(blind_store, mode="hybrid").search(
        query, k=2, exclude_doc_ids=[{"town/stoqueirirk"}]
    )
    assert "town/stoqueirirk" not in excluded[0].doc_ids


def test_hybrid_retrieval_sees_documents_added_live(blind_store):
    retriever = Retriever(blind_store, mode="hybrid")
    assert retriever.search(["Who is Quibbletown's mayor?"], k=1)[0].doc_ids != ["town/quibbletown"]
    blind_store.add_documents([Document("town/quibbletown", "The mayor of Quibbletown is Ada Vell.", "new")])
    assert retriever.search(["Who is Quibbletown's mayor?"], k=1)[0].doc_ids == ["town/quibbletown"]


def test_hybrid_retrieval_never_returns_a_removed_document(blind_store):
    query = ["In which year was Stoqueirirk founded?"]
    retriever = Retriever(blind_store, mode="hybrid")
    assert "town/stoqueirirk" in retriever.search(query, k=2)[0].doc_ids  # its BM25 index is built
    blind_store.remove_documents(["town/stoqueirirk"])
    # k past the live chunks: the fusion takes every chunk either ranking offers
    everything = blind_store.n_live_chunks + 1
    for searcher in (retriever, Retriever(blind_store, mode="hybrid")):
        found = searcher.search(query, k=everything)[0]
        assert "town/stoqueirirk" not in found.doc_ids
        assert (found.chunk_ids >= 0).sum() == blind_store.n_live_chunks


def test_unknown_retrieval_mode_is_a_clear_error(blind_store):
    with pytest.raises(ValueError, match="unknown retrieval mode"):
        Retriever(blind_store, mode="sparse")


VORNHOLT = "Vornholt is a quiet market town on the northern bank of the slow brown river Elde."


def _vornholt_store(folder, tokenizer, text: str) -> IndexStore:
    """Six filler towns and `town/vornholt` (title "Vornholt", `text`), blind vectors, chunks of 16."""
    documents = [
        Document(f"filler/{i}", f"Filler{i} was founded by farmers; it grows apples.", "test", f"Filler{i}")
        for i in range(6)
    ] + [Document("town/vornholt", text, "test", "Vornholt")]
    encoder = BlindEncoder()
    build_index(documents, folder / "ix", tokenizer, encoder, chunk_size=16)
    return IndexStore.open(folder / "ix", tokenizer, encoder)


def test_lexical_titles_let_a_question_find_the_chunk_that_names_its_subject_by_pronoun(tmp_path, tokenizer):
    # The founding year is in the document's second chunk, which says "It" where the first says
    # the name; only under its title does BM25 see that chunk as about Vornholt.
    store = _vornholt_store(tmp_path, tokenizer, f"{VORNHOLT} It was founded in 1925 by traders.")
    everything = np.arange(store.n_chunks)
    own = everything[np.array(store.chunk_doc_ids(everything)) == "town/vornholt"]
    rows = store.chunk_tokens(own)
    texts = store.tokenizer.decode_batch([[t for t in r.tolist() if t != store.pad_id] for r in rows])
    (year_chunk,) = [c for c, text in zip(own, texts, strict=True) if "1925" in text]
    assert "Vornholt" not in texts[list(own).index(year_chunk)]
    query = ["When was Vornholt founded?"]
    plain = Retriever(store, mode="hybrid").search(query, k=1)[0]
    titled = Retriever(store, mode="hybrid", lexical_titles=True).search(query, k=1)[0]
    assert plain.chunk_ids[0] != year_chunk  # the chunk that names Vornholt ranks first
    assert titled.chunk_ids[0] == year_chunk
    by_mode = Retriever(store, mode="hybrid-titled").search(query, k=1)[0]
    assert by_mode.chunk_ids.tolist() == titled.chunk_ids.tolist()
    assert store.chunk_titles(np.array([year_chunk, -1])) == ["Vornholt", ""]


class FillerFirstEncoder(BlindEncoder):
    """Puts a question and the filler towns' chunks together, away from every other chunk: a dense
    ranking that prefers passages in the question's wording about other entities."""

    def encode(self, texts, batch_size=None):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, 0 if ("Filler" in text or "?" in text) else 1] = 1.0
            for j in range(6):  # and "FillerJ" nearest its own chunk among them
                out[row, 2 + j] = 0.5 * (f"Filler{j}" in text)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class NoEncoder(BlindEncoder):
    def encode(self, texts, batch_size=None):
        raise AssertionError("lexical retrieval must not encode its queries")


def test_lexical_titled_ranks_the_named_document_where_the_fusion_lets_other_wordings_win(
    tmp_path, tokenizer
):
    """BM25 alone (title + text) puts the chunk of the document the question names first; fused with
    a dense ranking that prefers other entities' passages in the question's words, a filler town
    that both rankings place second or first outranks it (docs/results/cpu-demo-reading12-2026-12-06)."""
    documents = [
        Document(f"filler/{i}", f"Filler{i} was founded by farmers; it grows apples.", "test", f"Filler{i}")
        for i in range(6)
    ] + [Document("town/vornholt", f"{VORNHOLT} It was founded in 1925 by traders.", "test", "Vornholt")]
    build_index(documents, tmp_path / "ix", tokenizer, FillerFirstEncoder(), chunk_size=16)
    store = IndexStore.open(tmp_path / "ix", tokenizer, FillerFirstEncoder())
    query = ["When was Vornholt founded?"]
    fused = Retriever(store, mode="hybrid-titled").search(query, k=2)[0]
    assert fused.doc_ids[0].startswith("filler/")
    lexical = Retriever(store, encoder=NoEncoder(), mode="lexical-titled")
    found = lexical.search(query, k=2)[0]
    assert found.doc_ids[0] == "town/vornholt" and "1925" in found.texts[0]  # found under its title
    assert found.scores[0] >= found.scores[1] > 0  # BM25 scores
    # exclusions and removals hold, and rows BM25 cannot fill (no shared word) are padding
    (excluded,) = lexical.search(query, k=2, exclude_doc_ids=[{"town/vornholt"}])
    assert "town/vornholt" not in excluded.doc_ids and excluded.doc_ids[0].startswith("filler/")
    store.remove_documents(["town/vornholt"])
    (removed,) = lexical.search(query, k=2)
    assert "town/vornholt" not in removed.doc_ids
    # fewer chunks sharing a word with the query than k: the rest come from the dense ranking
    # (score 0), never a removed or excluded document's
    with pytest.raises(AssertionError, match="must not encode"):
        lexical.search(["Zzqx"], k=2)
    filled = Retriever(store, mode="lexical-titled")
    (few,) = filled.search(["Zzqx"], k=2)
    assert len(set(few.chunk_ids.tolist())) == 2 and min(few.chunk_ids) >= 0
    assert few.scores.tolist() == [0.0, 0.0] and "town/vornholt" not in few.doc_ids
    (one,) = filled.search(["Filler3 apples"], k=3, exclude_doc_ids=[{"filler/0"}])
    assert one.doc_ids[0] == "filler/3" and len(set(one.chunk_ids.tolist()) - {-1}) == 3
    assert "filler/0" not in one.doc_ids
    # the chunks titled Filler5 share a word, and MiniLM's ranking has the first of them first too:
    # six distinct chunks, none twice
    (fill,) = filled.search(["Filler5"], k=6)
    assert fill.doc_ids[:2] == ["filler/5", "filler/5"]
    assert len(set(fill.chunk_ids.tolist())) == 6 and min(fill.chunk_ids) >= 0


def _ranked(doc_ids: list[str], chunk_ids: list[int]):
    from index.retriever import Neighbours

    n = len(doc_ids)
    tokens = np.arange(n * 4, dtype=np.int64).reshape(n, 4)  # row i starts with 4 i: which row it was
    return Neighbours(tokens, -np.arange(n, dtype=np.float32), doc_ids, np.array(chunk_ids), list(doc_ids))


def test_top_document_first_shows_two_windows_of_the_best_document():
    from index.retriever import top_document_first

    # ranked: A's chunk 10, B's 20, A's 11 (its window 11-12 overlaps 10-11), C's 30, A's 13
    found = _ranked(["A", "B", "A", "C", "A"], [10, 20, 11, 30, 13])
    two = top_document_first(found, 2)
    assert two.chunk_ids.tolist() == [10, 13] and two.doc_ids == ["A", "A"]
    assert two.tokens[:, 0].tolist() == [0, 16] and two.texts == ["A", "A"]
    # beyond the best document's two windows: other documents' best, one each, in rank order
    assert top_document_first(found, 4).chunk_ids.tolist() == [10, 13, 20, 30]
    assert top_document_first(found, 1).chunk_ids.tolist() == [10]
    # no second window of the best document: the next document's best, as the ranked order has it
    lone = _ranked(["A", "B", "A", "C"], [10, 20, 11, 30])
    assert top_document_first(lone, 2).chunk_ids.tolist() == [10, 20]
    # fewer candidates than k: the missing rows stay padding rows (chunk id -1)
    short = _ranked(["A", ""], [10, -1])
    assert top_document_first(short, 2).chunk_ids.tolist() == [10, -1]


def test_top_document_first_with_wider_windows_skips_any_window_that_overlaps_the_best_one():
    from index.retriever import top_document_first

    # windows of 3 chunks: A's 10 shows 10-12, so A's 12 overlaps it and A's 13 is the second window
    found = _ranked(["A", "B", "A", "A"], [10, 20, 12, 13])
    assert top_document_first(found, 2).chunk_ids.tolist() == [10, 12]  # windows of 2: 12 is free
    assert top_document_first(found, 2, window=3).chunk_ids.tolist() == [10, 13]


def test_top_document_first_by_group_takes_the_second_window_from_the_best_ones_group():
    """With groups (e.g. the documents' titles), the second window may be another document of the
    best one's group, ranked above the best document's own next window; no candidate twice."""
    from index.retriever import top_document_first

    # ranked: A's 10, B's 20, A2's 40 (A's title), A's 13
    found = _ranked(["A", "B", "A2", "A"], [10, 20, 40, 13])
    titles = ["t:France", "t:Spain", "t:France", "t:France"]
    assert top_document_first(found, 2, titles).chunk_ids.tolist() == [10, 40]
    assert top_document_first(found, 2).chunk_ids.tolist() == [10, 13]  # by document, as before
    assert top_document_first(found, 3, titles).chunk_ids.tolist() == [10, 40, 20]
    assert top_document_first(found, 4, titles).chunk_ids.tolist() == [10, 40, 20, 13]  # ranked order fills


def test_hybrid_titled_doc_mode_retrieves_k_neighbours_of_the_best_document_first(tmp_path, tokenizer):
    middle = "Its mayor is Ada Brenn, and its market sells wool, cheese and barley every week."
    tail = "It was founded in 1925 by traders who came up the river from the coast."
    store = _vornholt_store(tmp_path, tokenizer, f"{VORNHOLT} {middle} {tail}")
    query = ["When was Vornholt founded?"]
    plain = Retriever(store, mode="hybrid-titled").search(query, k=2)[0]
    doc = Retriever(store, mode="hybrid-titled-doc").search(query, k=2)[0]
    assert doc.chunk_ids[0] == plain.chunk_ids[0] and doc.doc_ids == ["town/vornholt", "town/vornholt"]
    assert abs(int(doc.chunk_ids[1]) - int(doc.chunk_ids[0])) >= 2  # windows of two chunks, not overlapping
    assert len(Retriever(store, mode="hybrid-titled-doc").search(query, k=3)[0].chunk_ids) == 3


@pytest.mark.parametrize("mode", ["dense", "hybrid-titled", "hybrid-titled-doc", "lexical-titled"])
def test_a_wider_window_shows_more_of_each_neighbours_document_in_every_mode(tmp_path, tokenizer, mode):
    middle = "Its mayor is Ada Brenn, and its market sells wool, cheese and barley every week."
    tail = "It was founded in 1925 by traders who came up the river from the coast."
    store = _vornholt_store(tmp_path, tokenizer, f"{VORNHOLT} {middle} {tail}")
    query = ["When was Vornholt founded?"]
    plain = Retriever(store, mode=mode).search(query, k=2)[0]
    wide = Retriever(store, mode=mode, window=4).search(query, k=2)[0]
    m = store.chunk_size
    assert plain.tokens.shape == (2, 2 * m) and wide.tokens.shape == (2, 4 * m)
    if mode == "hybrid-titled-doc":  # the best document's second window must not overlap the first's 4 chunks
        assert wide.chunk_ids[0] == plain.chunk_ids[0]
        assert wide.doc_ids[1] != wide.doc_ids[0] or abs(int(wide.chunk_ids[1]) - int(wide.chunk_ids[0])) >= 4
    else:  # the same neighbours and texts, each shown with two more chunks of its document
        assert wide.chunk_ids.tolist() == plain.chunk_ids.tolist() and wide.texts == plain.texts
        np.testing.assert_array_equal(wide.tokens[:, : 2 * m], plain.tokens)
    np.testing.assert_array_equal(wide.tokens, store.chunks_with_continuations(wide.chunk_ids, window=4))
    with pytest.raises(ValueError, match="at least its own chunk"):
        Retriever(store, window=0)
