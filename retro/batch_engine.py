"""Continuous batching for RETRO: concurrent generations join and leave one running batch at token
boundaries (the scheduling vLLM does: rows are added and removed between steps, never inside one).

`BatchedRetroLanguageModel` is a `RetroLanguageModel` whose token loop runs in the caller's thread
(one per request, as a service worker gives each running job) up to its first token: prompt
padding, the prompt's retrieval (one call for its chunks, made on the engine's retrieval thread
with every other search waiting then), `Retro.prefill` and the first token
(`RetroLanguageModel.first_token`) are the one-request loop's code. From then on the request is a
row of its model's `BatchEngine`: the engine's one thread steps every running row together
(`retro.batch_decode.BatchDecoder`) and draws each row's next token with that row's own
`SamplingParams` and generator (`retro.sampling.sample_tokens`: each row drawn as `sample_token`
draws it, the greedy rows' argmax and the temperature-only rows' softmax in one op each), so
temperature, top-p, top-k and seeds mean what they mean alone; the request's thread takes its
tokens as they come and turns them into text (stop strings,
length, end-of-text: `retro.sampling.text_pieces`, unchanged). Greedy output is the one-request
output (tests/retro/test_batch_decode.py).

A step never waits for a request's thread, nor for retrieval: rows whose token closes a chunk
wait for its neighbours on the engine's retrieval thread while the other rows go on. A row leaves
the batch when it has drawn `max_new_tokens` tokens, drawn end-of-text or reached the context end
(what a caller of `stream` stops at), or at the next step boundary after its request stops reading
(stop string, cancel, disconnect: the token generator is closed); a row more than `MAX_AHEAD`
tokens ahead of its reader waits. At a step, every row whose token closes a chunk is retrieved
for in one `retrieve_many` call (the service groups them into one encoder call and one search per
index snapshot and k; the default calls each row's own `retrieve`), and their neighbours go
through the neighbour encoder together. An error in a step fails the rows of that step only; a
failing retrieval only its row.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch

from retro.batch_decode import BatchDecoder, DecodeRow
from retro.generate import RetroLanguageModel
from retro.language_model import Retrieve
from retro.model import DecodeCache, Retro
from retro.sampling import SamplingParams, sample_tokens
from retro.span_reader import SpanFollower, SpanReader

log = logging.getLogger(__name__)

# [(a row's retrieve, its query texts)] -> what each retrieve would have returned for its texts
RetrieveMany = Callable[[list[tuple[Retrieve, list[str]]]], list["np.ndarray | torch.Tensor"]]


def retrieve_each(requests: list[tuple[Retrieve, list[str]]]) -> list:
    """The default `RetrieveMany`: every row's own retrieve, one call each."""
    return [retrieve(texts) for retrieve, texts in requests]


class EngineClosed(RuntimeError):
    pass


# A row's sampled tokens not yet taken by its request's thread, at most: a slow reader (a stream
# whose client reads slowly) pauses its row instead of letting the engine run far ahead of it.
MAX_AHEAD = 16
# How many drawn tokens wake a request's thread: one, unless the request was opened inside
# `whole_text_wanted()` (nobody sees its tokens before its end: a non-streamed response), which is
# woken every GROUPED_WAKE tokens and at its end. Each wake-up of a reader costs the engine's thread
# a hand-over of the interpreter lock; with 16 rows that is 16 a step.
GROUPED_WAKE = MAX_AHEAD // 2
_wake_every: ContextVar[int] = ContextVar("retro_batch_wake_every", default=1)


@contextmanager
def whole_text_wanted():
    """Requests opened in this block (in this thread) are read as a whole, not token by token: their
    threads are woken every `GROUPED_WAKE` tokens. Their text is the same; a stop string or a cancel
    is seen up to GROUPED_WAKE - 1 tokens later, which the row then decodes for nothing."""
    token = _wake_every.set(GROUPED_WAKE)
    try:
        yield
    finally:
        _wake_every.reset(token)


class _Row:
    """One request in the engine: what it samples with, its decoder row, the tokens it has drawn."""

    def __init__(
        self, cache, retrieve, query, ids, params, generator, first_token: int, eos_id, follower=None
    ):
        self.cache: DecodeCache | None = cache  # until it joins the batch
        # the span reader's span, followed after the first token (retro.span_reader.SpanFollower)
        self.follower: SpanFollower | None = follower
        self.decoded: DecodeRow | None = None
        self.retrieve, self.query, self.ids = retrieve, query, ids
        self.params, self.generator, self.eos_id = params, generator, eos_id
        self.next_token = first_token  # sampled, not yet fed
        self.produced = 1  # tokens sampled for this request (the one from its prefill included)
        self.out: deque[int] = deque()
        self.wake_every = _wake_every.get()  # tokens in `out` that wake the reader (read at open)
        self.finished = False  # no more tokens will come (its last one is in `out`)
        self.closed = False  # its request has gone
        self.error: BaseException | None = None
        self.wake = threading.Condition()
        # neighbours for the chunk its next token closes, fetched on the retrieval thread
        self.fetching = False
        self.fetched: torch.Tensor | None = None
        self.fetched_for = -1  # the position they are for
        self.fetch_error: BaseException | None = None

    @property
    def pos(self) -> int:
        return self.decoded.pos if self.decoded is not None else self.cache.pos

    def runnable(self) -> bool:
        return not (self.finished or self.closed or self.fetching) and len(self.out) < MAX_AHEAD


class _PromptFetch:
    """A prompt's retrieval waiting for the retrieval thread."""

    def __init__(self, retrieve: Retrieve, texts: list[str]):
        self.retrieve, self.texts = retrieve, texts
        self.result = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class BatchEngine:
    """One thread that steps the running rows of one RETRO model together, at token boundaries.

    The engine samples each row's next token itself (`sample_token` with the row's own generator
    and parameters; greedy rows in one argmax), so a step never waits for a request's thread:
    those only take the tokens drawn for them. A row stops being stepped when it has drawn
    `max_new_tokens` tokens, drawn end-of-text or reached the context end, or when its request
    leaves; `on_step(rows)` is told each step's batch size.
    """

    def __init__(
        self,
        model: Retro,
        neighbours_of: Callable[[object], torch.Tensor],
        retrieve_many: RetrieveMany = retrieve_each,
        on_step: Callable[[int], None] | None = None,
        name: str = "retro",
    ):
        self.decoder = BatchDecoder(model)
        self.chunk_size, self.pad_id = model.config.chunk_size, model.config.pad_id
        self.max_seq_len = model.config.max_seq_len
        self._neighbours_of, self._retrieve_many = neighbours_of, retrieve_many
        self._on_step = on_step or (lambda rows: None)
        self._cond = threading.Condition()
        self._rows: list[_Row] = []  # opened and not yet out of the batch
        self._closed = False
        self._paused = 0
        self._fetches: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"batch-engine-{name}", daemon=True)
        self._fetcher = threading.Thread(target=self._fetch, name=f"batch-retrieval-{name}", daemon=True)
        self._thread.start()
        self._fetcher.start()

    # --- what a request's thread calls -----------------------------------------------------------
    def open(
        self, cache: DecodeCache, retrieve, query, ids, params, generator, first_token, eos_id, follower=None
    ) -> _Row:
        """A prefilled request whose first token (drawn from the prefill) is `first_token`; it
        joins the batch at the next step. `query(end)` is the retrieval text of the chunk ending
        (exclusive) at position `end` of `ids`, which the engine extends with each fed token.
        `follower` (told the first token already) biases each step's row as `SpanFollower.biased`."""
        row = _Row(cache, retrieve, query, ids, params, generator, first_token, eos_id, follower)
        ids.append(first_token)  # `ids` holds every token up to the one to feed next
        with self._cond:
            if self._closed:
                raise EngineClosed("the model's batch engine has stopped")
            self._rows.append(row)
            self._cond.notify_all()
        return row

    def tokens(self, row: _Row) -> Iterator[int]:
        """The tokens drawn for the row after its first, as they come; ends when it is finished.

        Each wake takes every token waiting (a reader that fell behind catches up in one go; a row
        read as a whole, `whole_text_wanted`, at least `GROUPED_WAKE` of them until its end), and
        the engine is told only when the row had been held back for being `MAX_AHEAD` ahead: the
        engine's lock is not taken once per token by every reader."""
        while True:
            with row.wake:
                row.wake.wait_for(
                    lambda: len(row.out) >= row.wake_every or row.finished or row.error is not None
                )
                if row.error is not None and not row.out:
                    raise row.error
                held_back = len(row.out) >= MAX_AHEAD
                taken = list(row.out)
                row.out.clear()
            if not taken:
                return
            if held_back:
                with self._cond:
                    self._cond.notify_all()  # the row may go on
            yield from taken

    def leave(self, row: _Row) -> None:
        """The request is over: its row leaves at the next step boundary."""
        with self._cond:
            row.closed = True
            self._cond.notify_all()

    @property
    def running(self) -> int:
        """Rows in the batch now (joined, not yet left)."""
        return len(self.decoder.rows)

    @property
    def opened(self) -> int:
        """Requests opened and not yet out of the batch (joined or about to join)."""
        return len(self._rows)

    @contextmanager
    def paused(self):
        """No step starts while held (the one running finishes): requests opened meanwhile join
        the same step, which a test needs to line rows up."""
        with self._cond:
            self._paused += 1
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._fetches.put(None)
        self._thread.join(timeout)
        self._fetcher.join(timeout)

    # --- the engine's thread ---------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[_Row], list[_Row]] | None:
        with self._cond:
            while not self._closed and (
                self._paused or not any(r.runnable() or r.closed for r in self._rows)
            ):
                self._cond.wait()
            if self._closed:
                for row in self._rows:
                    self._end(row, EngineClosed("the model's batch engine has stopped"))
                return None
            leaving = [r for r in self._rows if r.closed]
            batch = [r for r in self._rows if r.runnable()]
            self._rows = [r for r in self._rows if not r.closed]
            return batch, leaving

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                taken = self._next_batch()
                if taken is None:
                    return
                batch, leaving = taken
                try:
                    for row in leaving:
                        self._release(row)
                    if batch:
                        self._step(batch)
                except BaseException as e:  # the engine must outlive any one step
                    log.exception("batch engine step failed")
                    self._fail(batch, e)

    def _release(self, row: _Row) -> None:
        if row.decoded is not None:
            self.decoder.remove(row.decoded)
            row.decoded = None
        row.cache = None

    def _step(self, batch: list[_Row]) -> None:
        for row in batch:
            if row.decoded is None:
                row.decoded, row.cache = self.decoder.add(row.cache), None
            if row.fetch_error is not None:
                self._fail([row], row.fetch_error)
        batch = [row for row in batch if not row.finished]
        # Rows whose next token closes a chunk wait for its neighbours on the retrieval thread
        # (all of this step's in one call) while the others go on; they step once they have them.
        m = self.chunk_size
        fetch = [
            r for r in batch if r.retrieve is not None and (r.pos + 1) % m == 0 and r.fetched_for != r.pos
        ]
        if fetch:
            with self._cond:
                for row in fetch:
                    row.fetching = True
            self._fetches.put(fetch)
            batch = [row for row in batch if not row.fetching]
        if not batch:
            return
        neighbours = [row.fetched if row.fetched_for == row.pos else None for row in batch]
        for row in batch:
            row.fetched, row.fetched_for = None, -1
        try:
            out = self.decoder.step(
                [row.decoded for row in batch],
                [row.next_token for row in batch],
                neighbours,
            )
            out[:, self.pad_id] = float("-inf")  # padding is never an answer
            for b, row in enumerate(batch):
                if row.follower is not None and row.follower.pulling:
                    out[b] = row.follower.biased(out[b])
            tokens = self._sample(batch, out)
        except BaseException as e:
            self._fail(batch, e)
            return
        self._on_step(len(batch))
        for row, token in zip(batch, tokens, strict=True):
            if row.follower is not None:
                row.follower.saw(token)
            row.next_token = token
            row.ids.append(token)
            row.produced += 1
            done = row.produced >= row.params.max_new_tokens or token == row.eos_id
            if done or row.decoded.pos >= self.max_seq_len:
                self._release(row)  # nothing more to draw: its slot is free at once
                with self._cond:
                    if row in self._rows:
                        self._rows.remove(row)
                self._end(row, None, token)
            else:
                with row.wake:
                    row.out.append(token)
                    if len(row.out) >= row.wake_every:
                        row.wake.notify_all()

    @staticmethod
    def _sample(batch: list[_Row], out: torch.Tensor) -> list[int]:
        """Each row's token from its log-probabilities, as `sample_token` draws it with the row's
        own parameters and generator (`sample_tokens`: the shared work in one op per step)."""
        return sample_tokens(out, [row.params for row in batch], [row.generator for row in batch])

    def _end(self, row: _Row, error: BaseException | None, last: int | None = None) -> None:
        with row.wake:
            if last is not None:
                row.out.append(last)
            row.error = error if row.error is None else row.error
            row.finished = True
            row.wake.notify_all()

    def retrieve(self, retrieve: Retrieve, texts: list[str]):
        """A request's prompt retrieval, done on the retrieval thread together with whatever else
        waits there (other prompts, the rows closing a chunk): one `retrieve_many` call for all."""
        fetch = _PromptFetch(retrieve, list(texts))
        self._fetches.put(fetch)
        fetch.done.wait()
        if fetch.error is not None:
            raise fetch.error
        return fetch.result

    def _fetch(self) -> None:
        """The retrieval thread: everything waiting for neighbours (prompts, and the rows steps
        found closing a chunk) from one `retrieve_many` call; if that call fails, each one's own
        retrieve, so that one failure fails its own request only (a row's is failed by the engine,
        in its own thread)."""
        with torch.inference_mode():
            while True:
                items = [self._fetches.get()]
                while True:
                    try:
                        items.append(self._fetches.get_nowait())
                    except queue.Empty:
                        break
                if any(item is None for item in items):
                    for item in items:
                        if isinstance(item, _PromptFetch):
                            item.error = EngineClosed("the model's batch engine has stopped")
                            item.done.set()
                    return
                prompts = [item for item in items if isinstance(item, _PromptFetch)]
                rows = [row for item in items if isinstance(item, list) for row in item]
                with self._cond:
                    # A row whose request left while it waited here has been released (no decoder
                    # row, no cache, so no position): nothing to fetch for it. Reading its position
                    # once killed this thread, and every later search then waited for ever.
                    for row in rows:
                        if row.closed:
                            row.fetching = False
                    rows = [row for row in rows if not row.closed]
                    positions = [row.pos for row in rows]
                requests = [(p.retrieve, p.texts) for p in prompts]
                requests += [
                    (row.retrieve, [row.query(pos + 1)]) for row, pos in zip(rows, positions, strict=True)
                ]
                try:
                    found = self._retrieve_many(requests)
                except Exception:
                    found = None
                for i, (retrieve, texts) in enumerate(requests):
                    result, error = None, None
                    try:
                        result = found[i] if found is not None else retrieve(texts)
                        if i >= len(prompts):
                            result = self._neighbours_of(result)[0]
                    except Exception as e:
                        error = e
                    if i < len(prompts):
                        prompts[i].result, prompts[i].error = result, error
                        prompts[i].done.set()
                        continue
                    row, pos = rows[i - len(prompts)], positions[i - len(prompts)]
                    with self._cond:
                        row.fetched, row.fetched_for, row.fetch_error = result, pos, error
                        row.fetching = False
                        self._cond.notify_all()

    def _fail(self, rows: list[_Row], error: BaseException) -> None:
        for row in rows:
            try:
                self._release(row)  # its state may be half-updated: it cannot go on
            except Exception:
                log.exception("batch engine: a failed row could not leave the batch")
            finally:
                with self._cond:
                    if row in self._rows:
                        self._rows.remove(row)
                self._end(row, error)  # its request's thread must never wait for ever


class BatchedRetroLanguageModel(RetroLanguageModel):
    """A `RetroLanguageModel` whose concurrent generations are decoded together (`BatchEngine`)."""

    def __init__(
        self,
        model: Retro,
        tokenizer,
        query_tokens: int | None = None,
        first_copy_bias: float | None = None,
        first_candidates: int | None = None,
        span_reader: SpanReader | None = None,
        *,
        retrieve_many: RetrieveMany = retrieve_each,
        on_step: Callable[[int], None] | None = None,
        name: str = "retro",
    ):
        super().__init__(model, tokenizer, query_tokens, first_copy_bias, first_candidates, span_reader)
        model.eval()
        self.engine = BatchEngine(
            model,
            lambda rows: self._neighbours(rows, 1),
            retrieve_many=retrieve_many,
            on_step=on_step,
            name=name,
        )

    @classmethod
    def of(cls, lm: RetroLanguageModel, **options) -> BatchedRetroLanguageModel:
        """The same network, tokenizer and retrieval window as `lm`, decoded in batches."""
        return cls(
            lm.model,
            lm.tokenizer,
            lm.query_tokens,
            lm.first_copy_bias,
            lm.first_candidates,
            lm.span_reader,
            **options,
        )

    def close(self) -> None:
        self.engine.close()

    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
        query_from: int = 0,
    ) -> Iterator[int]:
        # The prefill as `RetroLanguageModel` does it, in this request's thread (the prompt's search
        # joins the engine's other searches waiting at that moment); then every step in the batch.
        model, cfg = self.model, self.model.config
        ids, last, cache, query, span = self.prefilled(
            prompt_ids,
            retrieve,
            search=self.engine.retrieve,
            cache_for=lambda n: model.new_cache(1, max_len=n),
            query_from=query_from,
            first_copy_bias=params.first_copy_bias,
            span_weight=params.span_weight,
        )
        token = self.first_token(last, cache, params, generator, retrieve is not None)
        yield token
        if len(ids) >= cfg.max_seq_len or token == self.eos_id or params.max_new_tokens <= 1:
            return  # a caller of `stream` asks for nothing after these
        follower = self.span_follower(span, params)
        follower.saw(token)
        row = self.engine.open(cache, retrieve, query, ids, params, generator, token, self.eos_id, follower)
        try:
            yield from self.engine.tokens(row)
        finally:
            self.engine.leave(row)


def batched_form(lm, **options):
    """`lm` decoded in batches (`BatchedRetroLanguageModel.of`; a model with its own `batched`,
    the retrieval-in-prompt comparator of `retro.in_context`, builds it over this one), or None
    for a model without a batched form (the Hugging Face comparison model: its transformers cache
    has no per-row positions to step together), which callers then serve one request at a time."""
    if isinstance(lm, BatchedRetroLanguageModel) or getattr(lm, "is_batched", False):
        return lm
    if callable(getattr(lm, "batched", None)):
        return lm.batched(**options)
    if isinstance(lm, RetroLanguageModel):
        return BatchedRetroLanguageModel.of(lm, **options)
    return None
