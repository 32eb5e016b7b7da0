"""Continuous batching for RETRO: concurrent generations join and leave one running batch at token
boundaries (the scheduling vLLM does: rows are added and removed between steps, never inside one).

`BatchedRetroLanguageModel` is a `RetroLanguageModel` whose token loop runs in the caller's thread
(one per request, as a service worker gives each running job) up to the prefill: prompt padding,
the prompt's retrieval (one call for its chunks) and `Retro.prefill` are the same code as the
one-request loop. From then on the request is a row of its model's `BatchEngine`: each time it has
sampled a token (`retro.sampling.sample_token` with its own generator, so temperature, top-p,
top-k, seed and stop mean what they mean alone) it hands the token to the engine and waits; the
engine's one thread steps every waiting row together (`retro.batch_decode.BatchDecoder`) and hands
each its log-probabilities. Greedy output is the one-request output (tests/retro/test_batch_decode.py).

At a step, every row whose token closes a chunk is retrieved for in one `retrieve_many` call (the
service groups them into one encoder call and one search per index snapshot and k; the default
calls each row's own `retrieve`), and their neighbours go through the neighbour encoder together.
A row that stops asking (its request ended, failed or was cancelled: the token generator is closed)
leaves at the next step boundary. An error in a step fails the rows of that step only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from retro.batch_decode import BatchDecoder, DecodeRow
from retro.generate import RetroLanguageModel
from retro.language_model import Retrieve
from retro.model import DecodeCache, Retro
from retro.sampling import SamplingParams, sample_token

log = logging.getLogger(__name__)

# [(a row's retrieve, its query texts)] -> what each retrieve would have returned for its texts
RetrieveMany = Callable[[list[tuple[Retrieve, list[str]]]], list["np.ndarray | torch.Tensor"]]


def retrieve_each(requests: list[tuple[Retrieve, list[str]]]) -> list:
    """The default `RetrieveMany`: every row's own retrieve, one call each."""
    return [retrieve(texts) for retrieve, texts in requests]


class EngineClosed(RuntimeError):
    pass


class _Row:
    """One request in the engine: its prefilled cache until it joins, then its decoder row."""

    def __init__(self, cache: DecodeCache, retrieve: Retrieve | None, query: Callable[[int], str]):
        self.cache: DecodeCache | None = cache
        self.decoded: DecodeRow | None = None
        self.retrieve, self.query = retrieve, query
        self.token = 0
        self.result: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    @property
    def pos(self) -> int:
        return self.decoded.pos if self.decoded is not None else self.cache.pos


class BatchEngine:
    """One thread that steps the waiting rows of one RETRO model together, at token boundaries.

    `gather_s` is how long a step waits for rows of the previous step that have not handed in
    their next token yet (their threads are sampling or passing text on); a row later than that
    simply joins the step after. `on_step(rows)` is told each step's batch size.
    """

    def __init__(
        self,
        model: Retro,
        neighbours_of: Callable[[object], torch.Tensor],
        retrieve_many: RetrieveMany = retrieve_each,
        on_step: Callable[[int], None] | None = None,
        gather_s: float = 0.005,
        name: str = "retro",
    ):
        self.decoder = BatchDecoder(model)
        self.chunk_size = model.config.chunk_size
        self._neighbours_of, self._retrieve_many = neighbours_of, retrieve_many
        self._on_step = on_step or (lambda rows: None)
        self.gather_s = gather_s
        self._cond = threading.Condition()
        self._waiting: list[_Row] = []  # rows that handed in a token for the next step
        self._leaving: list[_Row] = []
        # Rows a step waits for (briefly, `gather_s`): the last step's, and rows prefilled and
        # about to hand in their first token, so that requests arriving together decode together.
        self._previous: set[_Row] = set()
        self._joining: set[_Row] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"batch-engine-{name}", daemon=True)
        self._thread.start()

    # --- what a request's thread calls -----------------------------------------------------------
    def open(self, cache: DecodeCache, retrieve: Retrieve | None, query: Callable[[int], str]) -> _Row:
        """A prefilled request; it joins the batch with its first `step`. `query(end)` is the
        retrieval text of the chunk ending (exclusive) at position `end`."""
        row = _Row(cache, retrieve, query)
        with self._cond:
            self._joining.add(row)
        return row

    def step(self, row: _Row, token: int) -> torch.Tensor:
        """Feeds `token` at the row's position in the next batched step -> log-probabilities (V,)."""
        with self._cond:
            if self._closed:
                raise EngineClosed("the model's batch engine has stopped")
            row.token, row.result, row.error = int(token), None, None
            row.ready.clear()
            self._waiting.append(row)
            self._cond.notify_all()
        row.ready.wait()
        if row.error is not None:
            raise row.error
        return row.result

    def leave(self, row: _Row) -> None:
        """The request is over: its row leaves at the next step boundary."""
        with self._cond:
            if row in self._waiting:
                self._waiting.remove(row)
            self._previous.discard(row)
            self._joining.discard(row)
            self._leaving.append(row)
            self._cond.notify_all()

    @property
    def running(self) -> int:
        """Rows in the batch now (joined, not yet left)."""
        return len(self.decoder.rows)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # --- the engine's thread ---------------------------------------------------------------------
    def _next_batch(self) -> tuple[list[_Row], list[_Row]] | None:
        with self._cond:
            while not (self._waiting or self._leaving or self._closed):
                self._cond.wait()
            if self._closed:
                for row in self._waiting:
                    row.error = EngineClosed("the model's batch engine has stopped")
                    row.ready.set()
                return None
            deadline = time.monotonic() + self.gather_s
            while self._waiting and not (self._previous | self._joining).issubset(self._waiting):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, leaving = self._waiting, self._leaving
            self._waiting, self._leaving = [], []
            self._previous = set(batch)
            self._joining.difference_update(batch)
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
                        if row.decoded is not None:
                            self.decoder.remove(row.decoded)
                            row.decoded = None
                        row.cache = None
                    if batch:
                        self._step(batch)
                except BaseException as e:  # the engine must outlive any one step
                    log.exception("batch engine step failed")
                    self._fail(batch, e)

    def _step(self, batch: list[_Row]) -> None:
        for row in batch:
            if row.decoded is None:
                row.decoded, row.cache = self.decoder.add(row.cache), None
        neighbours = self._retrieve(batch)
        batch = [row for row in batch if row.error is None]
        if not batch:
            return
        try:
            out = self.decoder.step(
                [row.decoded for row in batch],
                [row.token for row in batch],
                [neighbours.get(row) for row in batch],
            )
        except BaseException as e:
            self._fail(batch, e)
            return
        self._on_step(len(batch))
        for b, row in enumerate(batch):
            row.result = out[b]
            row.ready.set()

    def _retrieve(self, batch: list[_Row]) -> dict[_Row, torch.Tensor]:
        """Neighbours (k, r) of every row whose token closes a chunk, from one `retrieve_many` call;
        if that call fails, each row's own retrieve, so one row's failure fails that row only."""
        m = self.chunk_size
        closing = [row for row in batch if row.retrieve is not None and (row.pos + 1) % m == 0]
        if not closing:
            return {}
        requests = [(row.retrieve, [row.query(row.pos + 1)]) for row in closing]
        try:
            found = self._retrieve_many(requests)
        except Exception:
            found = None
        neighbours: dict[_Row, torch.Tensor] = {}
        for i, row in enumerate(closing):
            try:
                rows = found[i] if found is not None else row.retrieve(requests[i][1])
                neighbours[row] = self._neighbours_of(rows)[0]
            except Exception as e:
                self._fail([row], e)
        return neighbours

    def _fail(self, rows: list[_Row], error: BaseException) -> None:
        for row in rows:
            if row.decoded is not None:
                self.decoder.remove(row.decoded)  # its state may be half-updated: it cannot go on
                row.decoded = None
            row.error = error
            row.ready.set()


class BatchedRetroLanguageModel(RetroLanguageModel):
    """A `RetroLanguageModel` whose concurrent generations are decoded together (`BatchEngine`)."""

    def __init__(
        self,
        model: Retro,
        tokenizer,
        query_tokens: int | None = None,
        *,
        retrieve_many: RetrieveMany = retrieve_each,
        on_step: Callable[[int], None] | None = None,
        gather_s: float = 0.005,
        name: str = "retro",
    ):
        super().__init__(model, tokenizer, query_tokens)
        model.eval()
        self.engine = BatchEngine(
            model,
            lambda rows: self._neighbours(rows, 1),
            retrieve_many=retrieve_many,
            on_step=on_step,
            gather_s=gather_s,
            name=name,
        )

    @classmethod
    def of(cls, lm: RetroLanguageModel, **options) -> BatchedRetroLanguageModel:
        """The same network, tokenizer and retrieval window as `lm`, decoded in batches."""
        return cls(lm.model, lm.tokenizer, lm.query_tokens, **options)

    def close(self) -> None:
        self.engine.close()

    def _sampled_tokens(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        generator: torch.Generator,
        retrieve: Retrieve | None,
    ) -> Iterator[int]:
        # Up to the prefill, `RetroLanguageModel._sampled_tokens` line for line (padding, prompt
        # retrieval, prefill), in this request's thread; then every step in the engine's batch.
        model, cfg, m = self.model, self.model.config, self.model.config.chunk_size
        ids = [cfg.pad_id] * ((-len(prompt_ids)) % m if retrieve is not None else 0) + prompt_ids
        q = self.query_tokens

        def query(end: int) -> str:
            return self.tokenizer.decode(ids[max(0, end - q) : end])

        n_chunks = len(ids) // m
        prompt_neighbours = None
        if retrieve is not None and n_chunks:
            texts = [query((u + 1) * m) for u in range(n_chunks)]
            prompt_neighbours = self._neighbours(retrieve(texts), n_chunks)[None]
        tokens = torch.tensor([ids], device=self.device)
        logprobs, cache = model.prefill(tokens, prompt_neighbours, model.new_cache(1, max_len=len(ids)))
        last = logprobs[0, -1]
        last[cfg.pad_id] = float("-inf")  # padding is never an answer
        row = self.engine.open(cache, retrieve, query)
        try:
            while True:
                token = sample_token(last, params, generator)
                yield token
                if len(ids) >= cfg.max_seq_len:
                    return
                ids.append(token)
                last = self.engine.step(row, token).clone()
                last[cfg.pad_id] = float("-inf")
        finally:
            self.engine.leave(row)


def batched_form(lm, **options) -> BatchedRetroLanguageModel | None:
    """`lm` decoded in batches (`BatchedRetroLanguageModel.of`), or None for a model without a
    batched form (the Hugging Face comparison model: its transformers cache has no per-row
    positions to step together), which callers then serve one request at a time."""
    if isinstance(lm, BatchedRetroLanguageModel):
        return lm
    if isinstance(lm, RetroLanguageModel):
        return BatchedRetroLanguageModel.of(lm, **options)
    return None
