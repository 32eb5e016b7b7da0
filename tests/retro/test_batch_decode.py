"""Continuous batching gives each request what it would get alone (retro.batch_decode, retro.batch_engine).

The decoder level: rows of different prompt lengths and k, joining at different steps, one
skipping a step and rows leaving mid-way, get `Retro.decode_step`'s log-probabilities. The engine
level: concurrent greedy and seeded generations with retrieval on equal one-request generations,
the rows closing a chunk at one step are retrieved for in one call, and a failing retrieval fails
only its own request.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from retro.batch_decode import BatchDecoder
from retro.batch_engine import GROUPED_WAKE, BatchedRetroLanguageModel, retrieve_each, whole_text_wanted
from retro.config import RetroConfig
from retro.generate import RetroLanguageModel
from retro.model import Retro
from retro.sampling import SamplingParams
from retro.tokenizer import Tokenizer

from .conftest import random_word_table

VOCAB = 300


WORDS = dict(word_dim=8, word_rows=50, word_keys=len(random_word_table(VOCAB)["keys"]))


@pytest.fixture(scope="module",
                params=[dict(copy_match_tokens=3), dict(copy_bag_window=5),
                        dict(copy_bag_window=5, copy_neighbour_bag=True),
                        dict(copy_bag_window=5, copy_neighbour_bag=True, copy_meaning_bag=True, **WORDS),
                        dict(copy_match_tokens=3, copy_bag_window=5, copy_neighbour_bag=True,
                             copy_match_gate=True)],
                ids=["match3", "bag5", "bag5+neighbour", "bag5+neighbour+words+meaning",
                     "match3+bag5+neighbour+gate"])  # fmt: skip
def model(request) -> Retro:
    # two CCA layers, copy head with the n-gram match (every part of the demo model's decode step),
    # or with the bag match alone (no n-gram contexts to carry), or with the neighbour match too,
    # or with word meanings as well (their projections made non-zero, so they change the outputs),
    # or with the match gate over the n-gram, bag and neighbour matches
    torch.manual_seed(0)
    cfg = RetroConfig.from_preset("tiny", cca_layers=(0, 1), vocab_size=VOCAB, **request.param)
    model = Retro(cfg).eval()
    if cfg.word_dim:
        model.word_meanings.load_table(random_word_table(VOCAB))
        with torch.no_grad():
            model.word_meanings.decoder_in.weight.normal_(0, 0.5)
            model.word_meanings.encoder_in.weight.normal_(0, 0.5)
            model.copy_head.meaning_salience.weight.normal_(0, 0.5)
    if cfg.copy_bag_window:
        with torch.no_grad():  # salient words, so the bag changes the pointer
            model.copy_head.bag_weight.copy_(torch.rand(VOCAB, generator=torch.Generator().manual_seed(2)))
    if cfg.copy_neighbour_bag:
        with torch.no_grad():  # and salient words for the neighbour match
            salience = torch.rand(VOCAB, generator=torch.Generator().manual_seed(3))
            model.copy_head.neighbour_weight.copy_(salience)
    if cfg.copy_match_gate:
        with torch.no_grad():  # a gate that reads the state, so each row's scales differ
            model.copy_head.match_gate.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
    return model


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    texts = ["The quick brown fox jumps over the lazy dog. Zorbland is a small island country."] * 8
    return Tokenizer.train(texts, vocab_size=VOCAB)


def fake_retrieve(texts: list[str]) -> np.ndarray:
    """Deterministic neighbours per query text (k=2, 32 tokens): the same text, the same rows."""
    rows = []
    for text in texts:
        seed = sum((i + 1) * ord(c) for i, c in enumerate(text)) % (1 << 31)
        rows.append(np.random.default_rng(seed).integers(1, VOCAB, size=(2, 32)))
    return np.stack(rows)


@torch.inference_mode()
def test_batched_steps_give_each_row_its_own_decode_step(model):
    cfg, m = model.config, model.config.chunk_size
    g = torch.Generator().manual_seed(1)

    def neighbours(k):
        return torch.randint(1, VOCAB, (k, cfg.retrieved_len), generator=g)

    # row 0 leaves first (t = 19) while the others go on: the last row moves into its slot and keeps
    # decoding there (with 40 steps it left last, and a decoder that never moved a row passed)
    lengths, ks, starts, steps = [16, 32, 48, 20], [2, 3, 1, 2], [0, 3, 7, 7], [20, 35, 30, 25]
    prompts = [torch.randint(1, VOCAB, (1, n), generator=g) for n in lengths]
    prompt_neighbours = [
        torch.stack([neighbours(k) for _ in range(n // m)])[None] if n >= m else None
        for n, k in zip(lengths, ks, strict=True)
    ]
    tokens = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in steps]
    arriving = {  # row 3 closes chunks without neighbours (a chunk the index had none for)
        (i, s): neighbours(ks[i]) for i in range(3) for s in range(steps[i]) if (lengths[i] + s + 1) % m == 0
    }
    expected = []
    for i in range(4):
        _, cache = model.prefill(prompts[i], prompt_neighbours[i])
        rows = []
        for s in range(steps[i]):
            n = arriving.get((i, s))
            step = model.decode_step(torch.tensor([tokens[i][s]]), cache, None if n is None else n[None])
            rows.append(step[0])
        expected.append(rows)

    decoder = BatchDecoder(model, initial_slots=1)  # slots and neighbour width grow as rows join
    rows, got, sizes = {}, {i: [] for i in range(4)}, []
    for t in range(80):
        for i in range(4):
            if starts[i] == t:
                cache = model.new_cache(1, max_len=lengths[i])
                _, cache = model.prefill(prompts[i], prompt_neighbours[i], cache)
                rows[i] = decoder.add(cache)
        live = [i for i in rows if rows[i].active]
        stepping = [i for i in live if not (i == 1 and t in (10, 11))]  # row 1 is late twice
        if not stepping:
            break
        sizes.append(len(stepping))
        at = [len(got[i]) for i in stepping]
        out = decoder.step(
            [rows[i] for i in stepping],
            [tokens[i][s] for i, s in zip(stepping, at, strict=True)],
            [arriving.get((i, s)) for i, s in zip(stepping, at, strict=True)],
        )
        for b, i in enumerate(stepping):
            got[i].append(out[b])
            if len(got[i]) == steps[i]:
                decoder.remove(rows[i])  # leaves mid-batch: another row moves into its slot
    assert max(sizes) == 4 and not decoder.rows
    for i in range(4):
        assert len(got[i]) == steps[i]
        for s, (a, b) in enumerate(zip(got[i], expected[i], strict=True)):
            # atol as test_cache.py: log-probabilities reach -40, where float32 steps are 4e-6 apart, and a
            # CPU that sums in another order (AVX-512 on an Intel Xeon) differs by a few of those steps
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"row {i}, step {s}")
            assert int(a.argmax()) == int(b.argmax())


def test_a_token_closing_no_chunk_refuses_neighbours(model):
    decoder = BatchDecoder(model)
    _, cache = model.prefill(torch.ones(1, 5, dtype=torch.long))
    row = decoder.add(cache)
    with pytest.raises(ValueError, match="closes none"):
        decoder.step([row], [3], [torch.ones(2, model.config.retrieved_len, dtype=torch.long)])


PROMPTS = [
    "Zorbland",
    "The quick brown fox jumps over the lazy dog and then the fox",
    "island " * 12,
    "The lazy dog",
]


def run_joined_at_steps(lm: BatchedRetroLanguageModel, jobs, starts: list[int]):
    """Runs jobs[i]() in its own thread once the engine has taken starts[i] steps."""
    steps = [0]
    lock = threading.Condition()
    sizes = []

    def on_step(rows: int) -> None:
        with lock:
            steps[0] += 1
            sizes.append(rows)
            lock.notify_all()

    lm.engine._on_step = on_step
    results = [None] * len(jobs)

    def run(i: int) -> None:
        with lock:
            lock.wait_for(lambda: steps[0] >= starts[i], timeout=30)
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, sizes


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def start_threads(jobs):
    """Starts each job in a thread; returns a result getter per job (it joins the thread)."""
    results = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()

    def getter(i: int):
        def get():
            threads[i].join(60)
            return results[i]

        return get

    return [getter(i) for i in range(len(jobs))], threads


def test_concurrent_greedy_generations_equal_one_request_generations(model, tokenizer):
    params = SamplingParams(max_new_tokens=40, temperature=0)
    alone = RetroLanguageModel(model, tokenizer)
    expected = [alone.generate(p, params, fake_retrieve).text for p in PROMPTS]
    calls = []

    def spy(requests):
        calls.append(len(requests))
        return retrieve_each(requests)

    lm = BatchedRetroLanguageModel(model, tokenizer, retrieve_many=spy)
    try:
        jobs = [lambda p=p: lm.generate(p, params, fake_retrieve).text for p in PROMPTS]
        # the first two join the same step (opened while the engine is paused)
        with lm.engine.paused():
            first, _ = start_threads(jobs[:2])
            wait_until(lambda: lm.engine.opened == 2)
        rest, sizes = run_joined_at_steps(lm, jobs[2:], starts=[5, 12])
        got = [f() for f in first] + rest
    finally:
        lm.close()
    assert got == expected
    assert max(sizes) >= 2, sizes  # they were decoded together
    # prompts are padded to a chunk boundary: the two that joined together close chunks together
    assert max(calls) >= 2, calls


def test_seeded_sampling_means_what_it_means_alone(model, tokenizer):
    settings = [
        SamplingParams(max_new_tokens=30, temperature=0.9, top_p=0.9, seed=5),
        SamplingParams(max_new_tokens=25, temperature=1.3, top_k=20, seed=7),
        SamplingParams(max_new_tokens=30, temperature=0.7, seed=11, stop=("fox",)),
    ]
    alone = RetroLanguageModel(model, tokenizer)
    expected = [alone.generate(p, s, fake_retrieve) for p, s in zip(PROMPTS, settings, strict=False)]
    lm = BatchedRetroLanguageModel(model, tokenizer)
    try:
        jobs = [
            lambda p=p, s=s: lm.generate(p, s, fake_retrieve) for p, s in zip(PROMPTS, settings, strict=False)
        ]
        got, _ = run_joined_at_steps(lm, jobs, starts=[0, 2, 3])
    finally:
        lm.close()
    assert got == expected


def test_a_request_read_as_a_whole_gets_the_same_text_with_fewer_wake_ups(model, tokenizer):
    """Inside `whole_text_wanted` (the service's non-streamed responses) a request's thread is woken
    every GROUPED_WAKE tokens instead of every token; its text, a stop string's cut and a seeded
    draw are what they are alone, and a request opened outside the block is woken per token."""
    settings = [
        SamplingParams(max_new_tokens=40, temperature=0),
        SamplingParams(max_new_tokens=30, temperature=0.8, seed=3, stop=("fox",)),
    ]
    alone = RetroLanguageModel(model, tokenizer)
    expected = [alone.generate(p, s, fake_retrieve) for p, s in zip(PROMPTS, settings, strict=False)]
    lm = BatchedRetroLanguageModel(model, tokenizer)
    opened: list = []  # (row, how many times its reader was woken)
    open_row = lm.engine.open

    def counting_open(*args):
        # the reader's waits: one per time it is woken and takes what is there, one to end
        row = open_row(*args)
        waits, wait_for = [0], row.wake.wait_for

        def counted(predicate, timeout=None):
            waits[0] += 1
            return wait_for(predicate, timeout)

        row.wake.wait_for = counted
        opened.append((row, waits))
        return row

    lm.engine.open = counting_open
    try:
        with whole_text_wanted():
            grouped = [lm.generate(p, s, fake_retrieve) for p, s in zip(PROMPTS, settings, strict=False)]
        grouped_rows = list(opened)
        opened.clear()
        each = lm.generate(PROMPTS[0], settings[0], fake_retrieve)
    finally:
        lm.close()
    assert grouped == expected and each == expected[0]
    assert [row.wake_every for row, _ in grouped_rows] == [GROUPED_WAKE] * 2
    assert [row.wake_every for row, _ in opened] == [1]
    # the first prompt's 40 tokens: one from the prefill, 39 drawn by the engine; read as a whole,
    # each take holds GROUPED_WAKE or more but the last: at most ceil(39 / 8) takes, one wait to end
    waits = grouped_rows[0][1][0]
    assert waits <= -(-39 // GROUPED_WAKE) + 1, waits


def test_a_failing_retrieval_fails_its_own_request_only(model, tokenizer):
    params = SamplingParams(max_new_tokens=40, temperature=0)
    alone = RetroLanguageModel(model, tokenizer)
    expected = alone.generate(PROMPTS[1], params, fake_retrieve).text
    calls = [0]

    def breaks_after_the_prompt(texts):
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("index went away")
        return fake_retrieve(texts)

    lm = BatchedRetroLanguageModel(model, tokenizer)
    errors = []

    def failing():
        try:
            lm.generate(PROMPTS[0], params, breaks_after_the_prompt)
        except RuntimeError as e:
            errors.append(str(e))

    try:
        got, _ = run_joined_at_steps(
            lm, [failing, lambda: lm.generate(PROMPTS[1], params, fake_retrieve).text], starts=[0, 0]
        )
        assert errors == ["index went away"]
        assert got[1] == expected
        deadline = time.monotonic() + 5
        while lm.engine.running and time.monotonic() < deadline:  # leaving is seen at the next boundary
            time.sleep(0.01)
        assert lm.engine.running == 0  # the failed row left the batch, and so did the finished one
        assert (
            lm.generate(PROMPTS[3], params, fake_retrieve).text
            == alone.generate(PROMPTS[3], params, fake_retrieve).text
        )
    finally:
        lm.close()


def test_a_row_whose_request_left_while_it_waited_for_neighbours_does_not_stop_retrieval(model, tokenizer):
    """A row waits on the retrieval thread for its chunk's neighbours (behind another search) and its
    request leaves meanwhile: the engine releases it (no decoder row, no cache). The retrieval thread
    must skip it: reading the released row's position once killed that thread, after which every
    search, and so every request, waited for ever (a service test hung in CI, 2026-12-06)."""
    from retro.batch_engine import _Row

    params = SamplingParams(max_new_tokens=8, temperature=0)
    lm = BatchedRetroLanguageModel(model, tokenizer)
    try:
        released = _Row(None, fake_retrieve, lambda end: "the chunk", [], params, None, 1, 0)
        released.closed, released.fetching = True, True  # as the engine leaves it: cache and row gone
        lm.engine._fetches.put([released])  # what `_step` queues for a row closing a chunk
        found = []
        search = threading.Thread(target=lambda: found.append(lm.engine.retrieve(fake_retrieve, ["a query"])))
        search.start()
        search.join(10)
        assert found and found[0].shape == (1, 2, 32), "the retrieval thread stopped"
        assert released.fetching is False and released.fetched is None
        expected = RetroLanguageModel(model, tokenizer).generate(PROMPTS[0], params, fake_retrieve).text
        got, _ = start_threads([lambda: lm.generate(PROMPTS[0], params, fake_retrieve).text])
        assert got[0]() == expected
    finally:
        lm.close()


def test_a_chat_searched_from_its_question_is_searched_so_in_a_batch_too(model, tokenizer):
    """`query_start` (a chat's system message left out of retrieval) reaches the batched prefill
    and the engine's chunk queries: the same queries and the same text as one request alone."""
    from retro.chat_template import ChatTurn, generation_prompt

    chat = generation_prompt(
        [ChatTurn("system", "The quick brown fox."), ChatTurn("user", "Zorbland is a small")]
    )
    params = SamplingParams(max_new_tokens=20, temperature=0)

    def run(lm):
        queries = []

        def spy(texts):
            queries.extend(texts)
            return fake_retrieve(texts)

        return lm.generate(chat.text, params, spy, chat.query_start).text, queries

    alone, alone_queries = run(RetroLanguageModel(model, tokenizer, query_tokens=64))
    batched = BatchedRetroLanguageModel(model, tokenizer, query_tokens=64)
    try:
        got, got_queries = run(batched)
    finally:
        batched.close()
    assert (got, got_queries) == (alone, alone_queries)
    assert len(alone_queries) > 1 and all("fox" not in q for q in alone_queries[-2:])


def test_the_first_copy_bias_of_the_config_starts_each_generation_from_its_neighbours(model, tokenizer):
    """`inference_first_copy_bias` (retro.config): generation lowers the copy head's null slot for
    the first token, so with a large bias greedy decoding's first token is one its neighbours show;
    batched decoding, which prefills through the same code, draws every token as one request does."""
    sure = copy.deepcopy(model)  # a model sure of its vocabulary, which copies little by itself
    with torch.no_grad():
        sure.copy_head.null.bias.fill_(10.0)
    biased_model = copy.deepcopy(sure)
    biased_model.config = model.config.replace(inference_first_copy_bias=60.0)
    plain, biased = RetroLanguageModel(sure, tokenizer), RetroLanguageModel(biased_model, tokenizer)
    own_choice_shown = []
    for prompt in PROMPTS:
        ids, last, _, query, _ = biased.prefilled(tokenizer.encode(prompt), fake_retrieve)
        shown = set(fake_retrieve([query(len(ids))])[:, :, : model.config.retrieved_len].flatten().tolist())
        assert int(last.argmax()) in shown
        _, plain_last, _, _, _ = plain.prefilled(tokenizer.encode(prompt), fake_retrieve)
        own_choice_shown.append(int(plain_last.argmax()) in shown)
    assert not all(own_choice_shown)  # without the bias some first token is not a neighbour's
    params = SamplingParams(max_new_tokens=30, temperature=0)
    expected = [biased.generate(p, params, fake_retrieve).text for p in PROMPTS]
    assert expected != [plain.generate(p, params, fake_retrieve).text for p in PROMPTS]
    batched = BatchedRetroLanguageModel.of(biased)
    try:
        assert batched.first_copy_bias == 60.0
        jobs = [lambda p=p: batched.generate(p, params, fake_retrieve).text for p in PROMPTS]
        got, _ = run_joined_at_steps(batched, jobs, starts=[0, 0, 3, 9])
    finally:
        batched.close()
    assert got == expected
    # a request's own bias overrides the model's, alone and batched: 60 on the plain model reads as
    # the biased model does, 0 on the biased model as the plain one
    asked = [plain.generate(p, replace(params, first_copy_bias=60.0), fake_retrieve).text for p in PROMPTS]
    assert asked == expected
    unbiased = replace(params, first_copy_bias=0.0)
    as_trained = [biased.generate(p, unbiased, fake_retrieve).text for p in PROMPTS]
    assert as_trained == [plain.generate(p, params, fake_retrieve).text for p in PROMPTS]
    batched = BatchedRetroLanguageModel.of(plain)
    try:
        asked_batched = [
            batched.generate(p, replace(params, first_copy_bias=60.0), fake_retrieve).text for p in PROMPTS
        ]
    finally:
        batched.close()
    assert asked_batched == expected
    off = BatchedRetroLanguageModel.of(RetroLanguageModel(biased_model, tokenizer, first_copy_bias=0.0))
    try:
        assert off.first_copy_bias == 0.0  # a caller's setting carries over to the batched form
    finally:
        off.close()


def test_the_first_candidates_of_the_config_choose_each_first_token_batched_as_alone(model, tokenizer):
    """`inference_first_candidates` (retro.first_token): greedy generation's first token is the
    lookahead's choice among the top five, which for some prompt is not the argmax; batched decoding
    draws it with the same code from the same prefill, so every token is the one-request loop's; a
    request's own `first_candidates` overrides the model's, alone and batched."""
    looking_model = copy.deepcopy(model)
    looking_model.config = model.config.replace(inference_first_candidates=5)
    plain, looking = RetroLanguageModel(model, tokenizer), RetroLanguageModel(looking_model, tokenizer)
    params = SamplingParams(max_new_tokens=30, temperature=0)
    expected = [looking.generate(p, params, fake_retrieve).text for p in PROMPTS]
    as_argmax = [plain.generate(p, params, fake_retrieve).text for p in PROMPTS]
    assert expected != as_argmax  # the lookahead overrules some first token
    batched = BatchedRetroLanguageModel.of(looking)
    try:
        assert batched.first_candidates == 5
        jobs = [lambda p=p: batched.generate(p, params, fake_retrieve).text for p in PROMPTS]
        got, _ = run_joined_at_steps(batched, jobs, starts=[0, 0, 3, 9])
        off = [batched.generate(p, replace(params, first_candidates=0), fake_retrieve).text for p in PROMPTS]
    finally:
        batched.close()
    assert got == expected
    assert off == as_argmax
    assert [
        plain.generate(p, replace(params, first_candidates=5), fake_retrieve).text for p in PROMPTS
    ] == expected
    # sampled generations are drawn as before: the candidates weigh greedy decoding only
    sampled = SamplingParams(max_new_tokens=12, temperature=0.8, seed=3)
    assert [looking.generate(p, sampled, fake_retrieve).text for p in PROMPTS] == [
        plain.generate(p, sampled, fake_retrieve).text for p in PROMPTS
    ]


@torch.inference_mode()
def test_a_row_without_neighbours_never_reads_what_its_slots_previous_row_left(model):
    """A row in its first chunk attends no chunk's neighbours (a prompt shorter than a chunk decoded
    without retrieval, as a request with retrieval off is). Once it joined a slot whose earlier row
    held neighbours, the decoder read them: a retrieval-off answer said the previous request's
    passage. Each step must be `Retro.decode_step`'s for the row alone."""
    cfg, m = model.config, model.config.chunk_size
    g = torch.Generator().manual_seed(5)
    decoder = BatchDecoder(model, initial_slots=1)
    # a row with retrieval: its prompt is whole chunks, and its neighbours fill slot 0's memory
    prompt = torch.randint(1, VOCAB, (1, 2 * m), generator=g)
    shown = torch.randint(1, VOCAB, (1, 2, 2, cfg.retrieved_len), generator=g)
    _, cache = model.prefill(prompt, shown, model.new_cache(1, max_len=2 * m))
    first = decoder.add(cache)
    decoder.step([first], [7], [None])
    decoder.remove(first)
    # then a row without retrieval, shorter than a chunk, in the same slot
    short = torch.randint(1, VOCAB, (1, m // 2), generator=g)
    tokens = torch.randint(1, VOCAB, (m // 2 - 1,), generator=g).tolist()
    _, alone = model.prefill(short)
    expected = [model.decode_step(torch.tensor([t]), alone)[0] for t in tokens]
    _, cache = model.prefill(short, None, model.new_cache(1, max_len=m // 2))
    row = decoder.add(cache)
    assert row.slot == first.slot
    got = [decoder.step([row], [t], [None])[0] for t in tokens]
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)
