"""The training-data recipe: determinism, exclusion, continuation neighbours at random offsets,
left padding, and the same tokens for the baseline."""

from dataclasses import replace

import numpy as np
import pytest

from index.build import build_index
from index.corpus import Document
from index.neighbours import TrainingChunks, precompute_neighbours
from retro.data import IGNORE, Recipe, TrainingData
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder

from .conftest import tiny_config

M = 4
TOPICS = [
    "otters",
    "mars",
    "bread",
    "violin",
    "chess",
    "nile",
    "rust",
    "caesar",
    "sleep",
    "monet",
    "gold",
    "paris",
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")

    def word():  # random pseudo-words: every chunk's tokens are unique to its document
        return "".join(rng.choice(letters, size=int(rng.integers(3, 8))))

    docs = [
        Document(
            f"doc/{i}",
            f"{t.title()}: " + " ".join(f"{t} {word()}" for _ in range(12)) + ".",
            "test",
        )
        for i, t in enumerate(TOPICS)
    ]
    tokenizer = Tokenizer.train([d.text for d in docs] * 3, vocab_size=300)
    out = tmp_path_factory.mktemp("index")
    build_index(docs, out, tokenizer, HashingEncoder(), chunk_size=M)
    precompute_neighbours(out, k=2)
    return out


def make_data(index_dir, **kwargs):
    recipe = kwargs.pop("recipe", Recipe())
    cfg = kwargs.pop("config", tiny_config(max_seq_len=16))  # 4 chunks of 4, neighbours of 8 tokens
    return TrainingData.from_index(index_dir, cfg, recipe=recipe, seed=7, total_steps=100, **kwargs)


def test_batches_are_a_pure_function_of_seed_and_step(index_dir):
    a, b = make_data(index_dir), make_data(index_dir)
    x, y = a.batch(5, 8), b.batch(5, 8)
    assert (x.tokens == y.tokens).all() and (x.neighbours == y.neighbours).all()
    assert not (a.batch(6, 8).tokens == x.tokens).all()
    assert not (
        a.batch(5, 8, rank=1, world_size=2).tokens == a.batch(5, 8, rank=0, world_size=2).tokens
    ).all()


def test_baseline_sees_the_same_tokens(index_dir):
    retro, base = make_data(index_dir), make_data(index_dir, baseline=True)
    x, y = retro.batch(3, 8), base.batch(3, 8)
    assert y.neighbours is None
    assert (x.tokens == y.tokens).all() and (x.targets == y.targets).all()


def test_targets_are_next_tokens_and_padding_is_ignored(index_dir):
    data = make_data(index_dir)
    batch = data.batch(1, 16)
    assert batch.tokens.shape == (16, 16) and batch.neighbours.shape == (16, 4, 2, 8)
    t, y = batch.tokens.numpy(), batch.targets.numpy()
    kept = y[:, :-1] != IGNORE
    assert (y[:, :-1][kept] == t[:, 1:][kept]).all()
    assert not (y == data.pad_id).any()


def test_left_padding_is_random_and_can_be_off(index_dir):
    padded = make_data(index_dir, recipe=Recipe(left_pad_prob=1.0)).batch(0, 32).tokens.numpy()
    n_pads = (np.cumprod(padded == 0, axis=1)).sum(1)
    assert (n_pads >= 1).all() and len(set(n_pads.tolist())) > 1 and n_pads.max() < M
    plain = make_data(index_dir, recipe=Recipe(left_pad_prob=0.0)).batch(0, 32)
    assert (plain.targets[:, 0] != IGNORE).float().mean() > 0.5


def _contains_run(row: np.ndarray, run: np.ndarray) -> int:
    for i in range(len(row) - len(run) + 1):
        if (row[i : i + len(run)] == run).all():
            return i
    return -1


def test_continuation_neighbour_holds_the_targets_at_random_offsets(index_dir):
    data = make_data(index_dir, recipe=Recipe(continuation_start=1.0, random_neighbour_prob=0.0))
    batch = data.batch(0, 32)
    offsets = []
    for b in range(32):
        for u in range(3):  # chunk u's attending positions (u+1)m-1 .. (u+2)m-2 predict these targets
            targets = batch.targets[b, (u + 1) * M - 1 : (u + 2) * M - 1].numpy()
            if (targets == IGNORE).any():
                continue
            found = [_contains_run(n, targets) for n in batch.neighbours[b, u].numpy()]
            assert max(found) >= 0, (b, u)
            offsets.append(max(found))
    assert len(set(offsets)) > 2  # not aligned: the offset varies


def test_neighbours_never_come_from_the_sequences_documents(index_dir):
    recipe = Recipe(
        continuation_start=0.0, continuation_end=0.0, random_neighbour_prob=0.0, left_pad_prob=0.0
    )
    data = make_data(index_dir, recipe=recipe)
    chunks = TrainingChunks(index_dir, 2)
    store = np.asarray(chunks.tokens)
    starts = np.arange(0, data.n_sequences, 3)
    batch = data.sequences(starts, np.zeros_like(starts))
    for b, start in enumerate(starts):
        seq_docs = set(np.asarray(chunks.doc_index)[data.chunk_ids[start : start + 5]].tolist())
        for row in batch.neighbours[b].reshape(-1, 8).numpy():
            if (row == 0).all():
                continue
            match = np.nonzero((store == row[:M]).all(1))[0]
            assert len(match) and not seq_docs & set(np.asarray(chunks.doc_index)[match].tolist())


def test_longer_neighbours_show_the_chunks_after_the_continuation(index_dir):
    """retrieved_len 16 (4 chunks of 4): the same neighbours as at 8, each shown with the two
    chunks of its document after its continuation (padding past the document's end)."""
    recipe = Recipe(
        continuation_start=0.0, continuation_end=0.0, random_neighbour_prob=0.0, left_pad_prob=0.0
    )
    short = make_data(index_dir, recipe=recipe)
    long = make_data(index_dir, recipe=recipe, config=tiny_config(max_seq_len=16, retrieved_len=16))
    chunks = TrainingChunks(index_dir, 2)
    store = np.asarray(chunks.tokens)
    starts = np.arange(0, short.n_sequences, 3)
    eight = short.sequences(starts, np.zeros_like(starts)).neighbours.numpy()
    sixteen = long.sequences(starts, np.zeros_like(starts)).neighbours.numpy()
    assert sixteen.shape == (*eight.shape[:-1], 16)
    np.testing.assert_array_equal(sixteen[..., :8], eight)
    shown = 0
    for row in sixteen.reshape(-1, 16):
        if (row == 0).all():
            continue
        (chunk,) = np.nonzero((store == row[:M]).all(1))[0]
        np.testing.assert_array_equal(row, chunks.neighbour_tokens(np.array([chunk]), 4)[0])
        shown += not (row[8:] == 0).all()
    assert shown  # some neighbours have more of their document to show


def test_distractor_share_falls_on_schedule():
    recipe = Recipe(continuation_start=1.0, continuation_end=0.6, decay_from=0.5)
    assert recipe.continuation_share(0, 100) == 1.0 and recipe.continuation_share(50, 100) == 1.0
    assert recipe.continuation_share(75, 100) == pytest.approx(0.8)
    assert recipe.continuation_share(100, 100) == pytest.approx(0.6)


def test_chunk_size_mismatch_and_missing_neighbours_are_clear(index_dir, tmp_path):
    with pytest.raises(ValueError, match="chunks of 4 tokens; the model expects 8"):
        TrainingData.from_index(index_dir, tiny_config(chunk_size=8, max_seq_len=32))
    with pytest.raises(ValueError, match="precompute_neighbours"):
        TrainingData.from_index(index_dir, tiny_config(n_neighbours=3, max_seq_len=16))


def test_documents_added_after_the_neighbour_table_are_a_clear_error(index_dir, tmp_path):
    import shutil

    from index.store import IndexStore

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    tokenizer = Tokenizer.load(TrainingChunks(copy).version_dir)
    IndexStore.open(copy, tokenizer, HashingEncoder()).add_documents(
        [Document("late/1", "otters late " * 10)]
    )
    n_before = TrainingChunks(index_dir).n_chunks
    with pytest.raises(ValueError, match=rf"covers {n_before} of \d+ chunks"):
        make_data(copy)
    precompute_neighbours(copy, k=2)
    assert make_data(copy).batch(0, 2).neighbours is not None


def test_reading_documents_get_their_chunks_neighbours_and_no_continuation(index_dir):
    """A chunk before a reading document's chunk holds that chunk's retrieved neighbours (never the
    stream's continuation): the answers of a question-and-answer document must be read elsewhere."""
    recipe = Recipe(read_prefix="doc/3,doc/7", random_neighbour_prob=0.0, continuation_end=1.0)
    data = make_data(index_dir, recipe=recipe)
    plain = make_data(index_dir, recipe=Recipe(random_neighbour_prob=0.0, continuation_end=1.0))
    chunks = data.chunks
    doc_ids = np.asarray(chunks.doc_ids)
    checked = 0
    for step in range(12):
        batch, plain_batch = data.batch(step, 8), plain.batch(step, 8)
        token_rng = np.random.default_rng([data.seed, step, 0, 1, 0])
        starts = token_rng.integers(0, data.n_sequences, size=8)
        for b, start in enumerate(starts):
            for u in range(data.n_seq_chunks):
                next_row = min(start + u + 1, len(data.chunk_ids) - 1)
                next_doc = doc_ids[np.asarray(chunks.doc_index)[data.chunk_ids[next_row]]]
                got = batch.neighbours[b, u].numpy()
                if next_doc in ("doc/3", "doc/7"):
                    expected_ids = np.array(chunks.neighbours[data.chunk_ids[next_row]])[: data.k]
                    allowed = [chunks.neighbour_tokens(np.array([[i]]))[0, 0, : data.r] for i in expected_ids]
                    for slot in got:  # each slot is one of the next chunk's neighbours, or dropped (padding)
                        assert any((slot == a).all() for a in allowed) or (slot == data.pad_id).all()
                    checked += 1
                else:  # other chunks are untouched by the knob
                    assert (got == plain_batch.neighbours[b, u].numpy()).all()
    assert checked > 0
    assert (batch.tokens == plain_batch.tokens).all()  # the tokens never depend on the recipe


def test_read_share_starts_sequences_before_reading_documents(index_dir):
    plain = make_data(index_dir)
    same = make_data(index_dir, recipe=Recipe(read_share=0.0, read_prefix="doc/3"))
    assert (plain.batch(3, 8).tokens == same.batch(3, 8).tokens).all()  # off: the data is unchanged
    data = make_data(index_dir, recipe=Recipe(read_share=1.0, read_prefix="doc/3", left_pad_prob=0.0))
    chunks = data.chunks
    doc3 = [i for i in range(chunks.n_chunks) if chunks.doc_ids[chunks.doc_index[i]] == "doc/3"]
    doc3_chunks = {tuple(np.asarray(chunks.tokens[i]).tolist()) for i in doc3}
    for step in range(5):
        tokens = data.batch(step, 8).tokens.numpy()
        for row in tokens:  # every sequence's second chunk is one of doc/3's chunks
            assert tuple(row[M : 2 * M].tolist()) in doc3_chunks
    with pytest.raises(ValueError, match="no document matches"):
        make_data(index_dir, recipe=Recipe(read_share=0.5, read_prefix="nothing/"))


def test_a_removed_document_is_never_trained_on_nor_a_neighbour(index_dir, tmp_path):
    """After `remove_documents`, no training sequence, retrieved or random neighbour holds the
    removed document's chunks (its tokens are unique to it), and an index without removals gives
    the batches it always gave."""
    import shutil

    from index.store import IndexStore

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    before = make_data(copy, recipe=Recipe(random_neighbour_prob=0.5)).batch(3, 8)
    again = make_data(index_dir, recipe=Recipe(random_neighbour_prob=0.5)).batch(3, 8)
    assert np.array_equal(before.tokens, again.tokens) and np.array_equal(before.neighbours, again.neighbours)
    tokenizer = Tokenizer.load(TrainingChunks(copy).version_dir)
    IndexStore.open(copy, tokenizer, HashingEncoder()).remove_documents(["doc/3"])
    precompute_neighbours(copy, k=2)
    chunks = TrainingChunks(copy)
    gone = set(np.asarray(chunks.tokens)[chunks.doc_chunks("doc/3")].reshape(-1).tolist()) - {chunks.pad_id}
    kept = np.asarray(chunks.tokens)[np.asarray(chunks.doc_index) != 3].reshape(-1)
    gone -= set(kept.tolist())  # tokens only the removed document has
    assert gone
    data = make_data(copy, recipe=Recipe(random_neighbour_prob=0.5))
    for step in range(20):
        batch = data.batch(step, 8)
        seen = set(batch.tokens.reshape(-1).tolist()) | set(batch.neighbours.reshape(-1).tolist())
        assert not seen & gone, step


def test_passage_neighbours_never_come_from_reading_documents(index_dir, tmp_path):
    """With passage_neighbours, no retrieved or random neighbour holds a reading document's chunk
    (as a serving index holds none), and the recipe asks for a table computed without them."""
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    recipe = Recipe(
        read_prefix="doc/3,doc/7", passage_neighbours=True, random_neighbour_prob=0.5,
        continuation_start=0.0, continuation_end=0.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="never_from"):
        make_data(copy, recipe=recipe)  # its table is not computed yet
    precompute_neighbours(copy, k=2, never_from=recipe.never_neighbours)
    chunks = TrainingChunks(copy)
    tokens, doc_index = np.asarray(chunks.tokens), np.asarray(chunks.doc_index)
    reading = np.isin(doc_index, [3, 7])
    only_reading = set(tokens[reading].reshape(-1).tolist()) - set(tokens[~reading].reshape(-1).tolist())
    assert only_reading
    data, plain = (
        make_data(copy, recipe=recipe),
        make_data(copy, recipe=replace(recipe, passage_neighbours=False)),
    )
    seen_plain = set()
    for step in range(20):
        assert not set(data.batch(step, 8).neighbours.reshape(-1).tolist()) & only_reading, step
        seen_plain |= set(plain.batch(step, 8).neighbours.reshape(-1).tolist())
    assert seen_plain & only_reading  # without the knob they are neighbours
    with pytest.raises(ValueError, match="needs read_prefix"):
        _ = Recipe(passage_neighbours=True).never_neighbours


def test_wide_reading_queries_read_their_own_table(index_dir, tmp_path):
    """read_query_chunks picks the table whose reading chunks were queried with that many chunks:
    without it the data refuses to start, and the reading chunks' neighbours come from it."""
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    recipe = Recipe(read_prefix="doc/3,doc/7", passage_neighbours=True, read_query_chunks=3)
    precompute_neighbours(copy, k=2, never_from=recipe.never_neighbours)  # the one-chunk table only
    with pytest.raises(ValueError, match="query_chunks=3"):
        make_data(copy, recipe=recipe)
    precompute_neighbours(
        copy, k=2, never_from=recipe.never_neighbours, query_chunks=3, encoder=HashingEncoder()
    )
    data = make_data(copy, recipe=recipe)
    assert data.chunks.query_chunks == 3 and data.chunks.neighbours.shape[1] == 2
    with pytest.raises(ValueError, match="needs passage_neighbours"):
        _ = Recipe(read_query_chunks=2).neighbour_query_chunks


@pytest.fixture(scope="module")
def titled_index(tmp_path_factory):
    """Four entities, each in three passages with its name as title (one per style, as the demo's
    training index holds a passage per training style), and one question document each."""
    rng = np.random.default_rng(1)
    letters = list("abcdefghijklmnopqrstuvwxyz")

    def word():
        return "".join(rng.choice(letters, size=int(rng.integers(3, 8))))

    names = ["otter", "comet", "violin", "walnut"]
    facts = {n: [word() for _ in range(4)] for n in names}
    docs = []
    for n in names:
        for style in ("prose", "table", "list"):
            text = f"{n} {style} " + " ".join(f"{n} {f} {word()}" for f in facts[n]) + "."
            docs.append(Document(f"passage/{n}/{style}", text, "test", title=n.title()))
        qa = " ".join(f"what {n} {f}? {f}." for f in facts[n])
        docs.append(Document(f"qa/{n}", qa, "test", title=n.title()))
    tokenizer = Tokenizer.train([d.text for d in docs] * 3, vocab_size=300)
    out = tmp_path_factory.mktemp("titled")
    build_index(docs, out, tokenizer, HashingEncoder(), chunk_size=M)
    return out


def test_distinct_titles_gives_a_reading_chunk_one_document_per_title(titled_index):
    """With distinct_titles, the chunk before a question document's chunk gets the best retrieved
    neighbour, then only windows of that document or of documents with another title, in retrieval
    order among TITLE_CANDIDATES; every other chunk, and every token, is as without the knob."""
    from retro.data import TITLE_CANDIDATES

    base = Recipe(read_prefix="qa/", passage_neighbours=True, random_neighbour_prob=0.0,
                  continuation_start=0.0, continuation_end=0.0)  # fmt: skip
    recipe = replace(base, distinct_titles="qa/")
    assert recipe.neighbour_tables(2) == (2, TITLE_CANDIDATES) and base.neighbour_tables(2) == (2,)
    precompute_neighbours(titled_index, k=2, never_from=base.never_neighbours)
    with pytest.raises(ValueError, match="k=8"):  # the wider table is not computed yet
        make_data(titled_index, recipe=recipe)
    precompute_neighbours(titled_index, k=TITLE_CANDIDATES, never_from=base.never_neighbours)
    data, plain = make_data(titled_index, recipe=recipe), make_data(titled_index, recipe=base)
    chunks = data.chunks
    doc_index, titles = np.asarray(chunks.doc_index), np.asarray(chunks.titles)
    table = np.asarray(data.title_candidates)
    by_tokens = {}
    for c in range(chunks.n_chunks):
        by_tokens.setdefault(chunks.neighbour_tokens(np.array([c]))[0, : data.r].tobytes(), []).append(c)
    checked = same_title_before = first_kept = 0
    for step in range(40):
        batch, plain_batch = data.batch(step, 8), plain.batch(step, 8)
        assert (batch.tokens == plain_batch.tokens).all()
        starts, _ = data.draws(step, 8)
        for b, start in enumerate(starts):
            for u in range(data.n_seq_chunks):
                next_row = min(start + u + 1, len(data.chunk_ids) - 1)
                got, before = batch.neighbours[b, u].numpy(), plain_batch.neighbours[b, u].numpy()
                if not chunks.doc_ids[doc_index[data.chunk_ids[next_row]]].startswith("qa/"):
                    assert (got == before).all()
                    continue
                candidates = table[data.chunk_ids[next_row]]
                chosen = [by_tokens[slot.tobytes()] for slot in got if (slot != data.pad_id).any()]
                # each is a candidate (those from the sequence's own documents are dropped as always)
                assert all(set(ids) & set(candidates.tolist()) for ids in chosen)
                if chosen and candidates[0] in chosen[0]:
                    first_kept += 1  # the best neighbour stays first
                docs = [{int(doc_index[c]) for c in ids} for ids in chosen]
                for i in range(len(docs)):
                    for j in range(i):
                        if not docs[i] & docs[j]:  # two documents: never one title
                            assert {titles[d] for d in docs[i]}.isdisjoint({titles[d] for d in docs[j]})
                old = [
                    {int(doc_index[c]) for c in by_tokens[s.tobytes()]}
                    for s in before
                    if (s != data.pad_id).any()
                ]
                pairs = [(x, y) for i, x in enumerate(old) for y in old[:i]]
                same_title_before += any(
                    not (x & y) and {titles[d] for d in x} & {titles[d] for d in y} for x, y in pairs
                )
                checked += 1
    assert checked > 20 and first_kept > 10
    assert same_title_before > 0  # without the knob, two passages of one entity were neighbours
    with pytest.raises(ValueError, match="which read_prefix does not"):
        replace(base, distinct_titles="passage/").neighbour_tables(2)
