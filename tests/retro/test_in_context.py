"""The retrieval-in-prompt comparator: its template, its training examples (passages of the first
chunk before RETRO's own sequence, loss on the text after that chunk, the sequence's documents
excluded), generation and scoring with the retrieved passages before the prompt, its batched form,
and its documents' scoring, causal by perturbation."""

import numpy as np
import pytest
import torch

from index.build import build_index
from index.corpus import Document
from index.neighbours import TrainingChunks, precompute_neighbours
from retro.config import PRESETS, RetroConfig
from retro.data import IGNORE, Recipe, TrainingData
from retro.in_context import (
    InContextLanguageModel,
    PassageTemplate,
    document_token_nll,
    language_model_for,
    passages_of,
    text_budget,
)
from retro.in_context_data import InContextTrainingData
from retro.model import Retro
from retro.sampling import SamplingParams
from retro.token_logprobs import score_tokens, stream_ids
from retro.tokenizer import Tokenizer
from tests.index.hashing_encoder import HashingEncoder

from .conftest import make_model, tiny_config

M, K, R, TEXT = 4, 2, 8, 16  # chunks of 4, 2 passages of 8 tokens, 16 tokens of text
TOPICS = ["otters", "mars", "bread", "violin", "chess", "nile", "rust", "caesar", "sleep", "monet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")

    def word():
        return "".join(rng.choice(letters, size=int(rng.integers(3, 8))))

    # two documents per topic, so that a chunk's nearest chunks of other documents share its words
    docs = [
        Document(f"doc/{t}/{j}", f"{t.title()}: " + " ".join(f"{t} {word()}" for _ in range(10)) + ".", "t")
        for t in TOPICS
        for j in range(2)
    ]
    tokenizer = Tokenizer.train([d.text for d in docs] * 3, vocab_size=300)
    out = tmp_path_factory.mktemp("index")
    build_index(docs, out, tokenizer, HashingEncoder(), chunk_size=M)
    precompute_neighbours(out, k=K)
    return out, tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread of the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rag_config(tokenizer, **overrides) -> RetroConfig:
    budget = PassageTemplate.for_tokenizer(tokenizer).passages_budget(K, R)
    base = dict(cca_layers=(), copy_head=False, neighbour_prev_tokens=0, in_context=True,
                max_seq_len=budget + TEXT, n_neighbours=K, retrieved_len=R, chunk_size=M)  # fmt: skip
    return tiny_config(**{**base, **overrides})


def make_data(corpus, **kwargs) -> InContextTrainingData:
    index_dir, tokenizer = corpus
    recipe = kwargs.pop("recipe", Recipe(read_share=0.0))
    return InContextTrainingData.from_index(
        index_dir, rag_config(tokenizer), tokenizer, recipe=recipe, seed=7, total_steps=100, **kwargs
    )


# --- the config and the template ------------------------------------------------------------------
def test_config_marks_a_plain_decoder_and_old_configs_read_the_same():
    with pytest.raises(ValueError, match="in_context=True is a plain decoder"):
        tiny_config(in_context=True)  # CCA layers and a copy head
    plain = tiny_config(cca_layers=(), copy_head=False)
    assert "in_context" not in plain.to_dict()  # checkpoints and train states saved before it match
    rag = plain.replace(in_context=True)
    assert rag.to_dict()["in_context"] is True and RetroConfig.from_dict(rag.to_dict()) == rag
    assert rag.reads_neighbours and not rag.uses_retrieval and plain.reads_neighbours is False


def test_demo_rag_is_about_the_demo_in_total_parameters_and_holds_its_sequences():
    demo, rag = (Retro(PRESETS[n]).parameter_counts()["total"] for n in ("demo", "demo-rag"))
    assert 0.9 * demo <= rag <= 1.1 * demo
    config = PRESETS["demo-rag"]
    template = PassageTemplate((1, 2, 3, 4), (5,), (6, 7, 8, 9))  # the demo tokenizer's piece lengths
    assert template.passages_budget(2, 64) == 142
    assert text_budget(config, template) == PRESETS["demo"].max_seq_len == 256


def test_header_wraps_each_passage_and_reads_as_the_documented_text(corpus):
    _, tokenizer = corpus
    template = PassageTemplate.for_tokenizer(tokenizer)
    first, second = tokenizer.encode(" Otters float"), tokenizer.encode(" Mars is red")
    ids = template.header([first, second]) + tokenizer.encode(" The otters")
    assert tokenizer.decode(ids) == "Passage: Otters float\nPassage: Mars is red\nText: The otters"
    assert tokenizer.decode(template.header([])) == "Text:"
    padded = np.array([[*first, 0, 0, 0], [0] * (len(first) + 3)])  # an empty slot is no passage
    assert passages_of(padded, len(first) + 3, 0) == [first]
    assert passages_of(padded, 4, 0) == [first[:4]]  # cut to the passage length first


# --- training examples ------------------------------------------------------------------------------
def test_examples_are_retro_sequences_with_the_first_chunks_passages_before_them(corpus):
    index_dir, tokenizer = corpus
    data = make_data(corpus, recipe=Recipe(left_pad_prob=0.5))
    assert data.seq_len == TEXT
    # RETRO with the same seed, recipe and sequence length draws the same sequences
    retro = TrainingData.from_index(
        index_dir, tiny_config(max_seq_len=TEXT), recipe=Recipe(left_pad_prob=0.5), seed=7, total_steps=100
    )
    step, B = 3, 8
    starts, shifts = data.sequences.draws(step, B)
    retro_starts, retro_shifts = retro.draws(step, B)
    assert (starts == retro_starts).all() and (shifts == retro_shifts).all() and shifts.any()
    retro_batch, batch = retro.batch(step, B), data.batch(step, B)
    assert batch.neighbours is None and batch.tokens.shape == (B, data.config.max_seq_len)
    template, chunks = data.template, TrainingChunks(index_dir, K)
    for b in range(B):
        start, shift = int(starts[b]), int(shifts[b])
        store_chunk = data.sequences.chunk_ids[start]
        seq_docs = set(data.sequences.doc_of_chunk[start : start + TEXT // M + 1].tolist())
        passages = []
        for n in chunks.neighbours[store_chunk][:K]:
            if n >= 0 and chunks.doc_index[n] not in seq_docs:
                passages += passages_of(chunks.neighbour_tokens(np.array([n])), R, 0)
        header = template.header(passages)
        text = data.sequences.stream[start * M : start * M + TEXT + 1 - shift].tolist()
        assert retro_batch.tokens[b, shift:].tolist() == text[:-1]  # RETRO's sequence, unpadded
        expected = header + text
        got = batch.tokens[b].tolist()
        assert got[: len(expected) - 1] == expected[:-1]  # passages, then RETRO's sequence unpadded
        assert all(t == 0 for t in got[len(expected) - 1 :])  # right padding
        # no target on the passages, the template or the query chunk; the next tokens after it
        targets = batch.targets[b].tolist()
        first = len(header) - 1 + M
        assert all(t == IGNORE for t in targets[:first])
        later = [t if t != 0 else IGNORE for t in expected[first + 1 :]]
        assert targets[first : first + len(later)] == later
        assert any(t != IGNORE for t in later)


def test_continuation_passages_hold_later_text_on_the_recipes_schedule_and_keep_the_draws(corpus):
    """`Recipe.continuation_passages`: the in-prompt analogue of RETRO's continuation neighbours."""
    plain = make_data(corpus)
    copying = make_data(corpus, recipe=Recipe(read_share=0.0, continuation_passages=True))
    step, B = 3, 8
    starts, shifts = copying.sequences.draws(step, B)
    plain_starts, plain_shifts = plain.sequences.draws(step, B)
    assert (starts == plain_starts).all() and (shifts == plain_shifts).all()  # the same sequences
    batch = copying.batch(step, B)
    assert (batch.tokens == copying.batch(step, B).tokens).all()  # a function of the step (resume)
    for b in range(B):
        text = copying.sequences.stream[starts[b] * M : starts[b] * M + TEXT + 1 - shifts[b]].tolist()
        got = batch.tokens[b].tolist()
        # the text follows the passages unchanged ...
        text_at = next(i for i in range(len(got)) if got[i : i + len(text) - 1] == text[:-1])
        header, later = got[:text_at], [t for t in text[M:] if t != 0]
        # ... and at continuation_start = 1.0 the passages hold a window of the text after the
        # query chunk: tokens the model predicts, found there by content
        n = R // 2  # a window of R tokens, padding dropped: at least an n-gram of it survives here
        assert any(
            header[i : i + n] == later[j : j + n]
            for i in range(len(header))
            for j in range(len(later) - n + 1)
        )
    # a share of 0 gives the retrieved passages again, example for example
    off = make_data(
        corpus,
        recipe=Recipe(
            read_share=0.0, continuation_passages=True, continuation_start=0.0, continuation_end=0.0
        ),
    )
    assert (off.batch(step, B).tokens == plain.batch(step, B).tokens).all()


def test_passages_come_only_from_the_first_chunk_and_never_from_the_sequences_documents(corpus):
    data = make_data(corpus)
    starts, shifts = data.sequences.draws(0, 16)
    before = data.examples(starts, shifts)
    # causality by perturbation: the neighbour table's rows of every chunk but the first don't matter
    table = np.array(data.chunks.neighbours)
    firsts = set(data.sequences.chunk_ids[starts].tolist())
    others = [i for i in range(len(table)) if i not in firsts]
    scrambled = table.copy()
    scrambled[others] = np.random.default_rng(1).integers(0, len(table), size=(len(others), K))
    data.chunks.neighbours = scrambled
    after = data.examples(starts, shifts)
    assert (before.tokens == after.tokens).all() and (before.targets == after.targets).all()
    # a neighbour from a document of the sequence is never a passage
    L = data.sequences.n_seq_chunks
    seq_rows = np.minimum(starts[0] + np.arange(L + 1), len(data.sequences.chunk_ids) - 1)
    own = int(data.sequences.chunk_ids[seq_rows[1]])  # a chunk the first chunk's text runs into
    scrambled[data.sequences.chunk_ids[starts[0]]] = own
    data.chunks.neighbours = scrambled
    assert data.passages(starts[:1]) == [[]]
    data.chunks.neighbours = table


def test_batches_are_a_pure_function_of_seed_and_step(corpus):
    a, b = make_data(corpus), make_data(corpus)
    assert (a.batch(5, 4).tokens == b.batch(5, 4).tokens).all()
    assert not (a.batch(5, 4).tokens == a.batch(6, 4).tokens).all()


def test_a_context_without_room_for_two_chunks_of_text_is_refused(corpus):
    index_dir, tokenizer = corpus
    budget = PassageTemplate.for_tokenizer(tokenizer).passages_budget(K, R)
    with pytest.raises(ValueError, match="needs at least two chunks"):
        InContextTrainingData.from_index(index_dir, rag_config(tokenizer, max_seq_len=budget + M), tokenizer)


# --- generation and scoring -------------------------------------------------------------------------
def padded(ids: list[int], n: int) -> list[int]:
    return (ids + [0] * n)[:n]


class FixedRetrieve:
    """retrieve(texts) -> the same [len(texts), k, n] neighbours; remembers the queries."""

    def __init__(self, neighbours: np.ndarray):
        self.neighbours, self.queries = neighbours, []

    def __call__(self, texts):
        self.queries.append(list(texts))
        return np.stack([self.neighbours] * len(texts))


@pytest.fixture()
def lm(corpus):
    """A random comparator with room for 64 tokens of prompt and completion beside its passages."""
    _, tokenizer = corpus
    budget = PassageTemplate.for_tokenizer(tokenizer).passages_budget(K, R)
    return InContextLanguageModel(make_model(rag_config(tokenizer, max_seq_len=budget + 64)), tokenizer)


def test_generation_reads_the_prompts_passages_before_it(lm, monkeypatch):
    tok = lm.tokenizer
    first, second = tok.encode(" Otters float on")[:R], tok.encode(" their backs")[:R]
    neighbours = np.array([padded(first, 2 * M), padded(second, 2 * M)])
    retrieve = FixedRetrieve(neighbours)
    fed = []
    prefill = lm.model.prefill

    def spy(tokens, neighbours=None, cache=None, last_copy_bias=0.0):
        fed.append((tokens[0].tolist(), neighbours))
        return prefill(tokens, neighbours, cache, last_copy_bias)

    monkeypatch.setattr(lm.model, "prefill", spy)
    prompt = "Mars is the fourth planet from"
    out = lm.generate(prompt, SamplingParams(max_new_tokens=3, temperature=0.0), retrieve)
    prompt_ids = tok.encode(prompt)
    # one search, with the prompt's last m tokens; the passages before the prompt in the template
    assert retrieve.queries == [[tok.decode(prompt_ids[-M:])]]
    assert fed[0][1] is None
    assert fed[0][0] == lm.template.header([first, second]) + prompt_ids
    shown = f"Passage:{tok.decode(first)}\nPassage:{tok.decode(second)}\nText:{tok.decode(prompt_ids)}"
    assert tok.decode(fed[0][0]) == shown
    assert out.prompt_tokens == len(prompt_ids) and out.completion_tokens == 3
    # without retrieval: "Text:" and the prompt
    fed.clear()
    lm.generate(prompt, SamplingParams(max_new_tokens=1, temperature=0.0), None)
    assert fed[0][0] == list(lm.template.text_open) + prompt_ids


def test_a_chats_one_search_reads_from_its_question(lm):
    from retro.chat_template import ChatTurn, generation_prompt

    chat = generation_prompt([ChatTurn("system", "Otters float."), ChatTurn("user", "Mars")])
    retrieve = FixedRetrieve(np.zeros((K, 2 * M), dtype=np.int64))
    params = SamplingParams(max_new_tokens=1, temperature=0.0)
    wide = InContextLanguageModel(lm.model, lm.tokenizer, query_tokens=64)  # it reaches the system message
    wide.generate(chat.text, params, retrieve)
    wide.generate(chat.text, params, retrieve, chat.query_start)
    without, with_start = retrieve.queries
    assert "Otters" in without[0] and with_start == [" Mars"]


def test_prompt_limit_leaves_room_for_the_passages_and_extra_passages_are_dropped(lm):
    budget = lm.template.passages_budget(K, R)
    assert lm.prompt_limit(True) == lm.max_seq_len - 1 - budget
    assert lm.prompt_limit(False) == lm.max_seq_len - 1 - len(lm.template.text_open)
    full = np.full((2 * K, R), 7)  # four full passages where the model was trained with two
    ids = lm.context_ids([5] * lm.prompt_limit(True), full)
    assert len(ids) == lm.max_seq_len - 1 and ids.count(7) == K * R


def test_scoring_is_the_distribution_generation_samples_from(lm):
    tok = lm.tokenizer
    retrieve = FixedRetrieve(np.array([padded(tok.encode(" Otters float"), 2 * M), [0] * (2 * M)]))
    prompt_ids = tok.encode("Mars is the fourth")
    generated: list[int] = []
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    list(stream_ids(lm, prompt_ids, params, retrieve, generated))
    assert len(generated) == 4
    scores = score_tokens(lm, prompt_ids + generated, len(prompt_ids), top_n=1, retrieve=retrieve)
    for position, token in enumerate(generated, start=len(prompt_ids)):
        assert scores.top[position][0][0] == token  # greedy tokens are the scored argmax
    assert retrieve.queries[-1] == [tok.decode(prompt_ids[-M:])]


def test_batched_form_generates_what_one_request_does(lm):
    tok = lm.tokenizer
    retrieve = FixedRetrieve(np.array([padded(tok.encode(" Otters float"), 2 * M), [0] * (2 * M)]))
    params = SamplingParams(max_new_tokens=5, temperature=0.0)
    alone = lm.generate("Mars is the", params, retrieve).text
    batched = lm.batched()
    try:
        assert batched.is_batched and isinstance(batched, InContextLanguageModel)
        assert batched.generate("Mars is the", params, retrieve).text == alone
    finally:
        batched.close()


def test_language_model_for_picks_the_comparator(corpus):
    _, tokenizer = corpus
    rag, retro = make_model(rag_config(tokenizer)), make_model(tiny_config())
    assert isinstance(language_model_for(rag, tokenizer), InContextLanguageModel)
    assert not isinstance(language_model_for(retro, tokenizer), InContextLanguageModel)


# --- scoring documents ------------------------------------------------------------------------------
def test_document_scoring_reads_the_previous_chunks_passages_only(lm):
    model, tok = lm.model, lm.tokenizer
    ids = tok.encode("Otters float on their backs and crack shellfish open with stones at sea.")[:58]
    assert len(ids) == 58  # one window (of 64 tokens of text) once left-padded to whole chunks
    n_chunks = (len(ids) + (-len(ids)) % M) // M
    rng = np.random.default_rng(0)
    table = rng.integers(2, 200, size=(n_chunks, K, R))
    asked = []

    def neighbours_for(chunks):
        asked.append([list(c) for c in chunks])
        return table[: len(chunks)].copy()

    nll, retrieved = document_token_nll(model, tok, ids, neighbours_for)
    off, _ = document_token_nll(model, tok, ids, None)
    assert nll.shape == off.shape == (len(ids) - 1,) and np.isfinite(nll).all()
    lead = (-len(ids)) % M
    # "off" is one plain forward of "Text:" and the text (the window holds the whole document)
    header = list(lm.template.text_open)
    with torch.no_grad():
        logp = model(torch.tensor([header + ids[:-1]]))[0]
    expected = [-float(logp[len(header) + i - 1, ids[i]]) for i in range(1, len(ids))]
    assert np.allclose(off, expected, atol=1e-5)
    # causality by perturbation: chunk u's neighbours move only chunk u + 1's tokens
    u = 1
    table[u] = rng.integers(2, 200, size=(K, R))
    moved, _ = document_token_nll(model, tok, ids, neighbours_for)
    changed = np.nonzero(~np.isclose(moved, nll))[0] + 1  # ids indices whose loss moved
    assert len(changed) and set(changed) <= set(range((u + 1) * M - lead, (u + 2) * M - lead))
    assert retrieved[u] is not None and retrieved[n_chunks - 1] is None
    assert asked[0][0][:lead] == [0] * lead  # the first query chunk is the left-padded one


# --- the command line -------------------------------------------------------------------------------
def test_retro_train_trains_the_comparator_preset_and_export_keeps_it(tmp_path):
    from typer.testing import CliRunner

    from retro.checkpoint import load_checkpoint
    from service.cli import app
    from tests.index.conftest import TOPIC_DOCUMENTS

    tokenizer = Tokenizer.train([d.text for d in TOPIC_DOCUMENTS] * 3, vocab_size=400)
    index_dir = tmp_path / "ix"
    build_index(TOPIC_DOCUMENTS, index_dir, tokenizer, HashingEncoder(), chunk_size=16)  # tiny-rag: m=16
    args = ["train", "--preset", "tiny-rag", "--index", str(index_dir), "--out", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "2", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    assert "k=2 passages in its prompt" in text and "trained 2/2 steps" in text
    model, _, meta = load_checkpoint(tmp_path / "run")
    assert model.config.in_context and not meta["baseline"]
    assert meta["in_context"]["context_len"] == 256 and meta["in_context"]["text_len"] % 16 == 0
    exported = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "model")])
    assert exported.exit_code == 0, exported.output
    model, tok, _ = load_checkpoint(tmp_path / "model")
    assert isinstance(language_model_for(model, tok), InContextLanguageModel)
