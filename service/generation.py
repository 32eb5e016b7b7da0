"""Running one generation for a request: sampling checks, retrieval wiring, the worker job, timing.

Shared by /v1/completions, /v1/chat/completions and /v1/compare. `prepare` turns request fields
into a `GenerationJob` (`SamplingParams` and a `NeighbourRecorder` or none; for completions also a
prompt given as token ids, and `logprobs`) and refuses, with the limit named, what the
server will not do. `run_generation` is the blocking work a `ModelWorker` runs: it iterates the
model's stream, stops when the request's cancel event is set, and reports text, counts, time and
neighbours as a `GenerationOutcome`; with `logprobs` it then scores prompt and completion
(`retro.token_logprobs`, reusing the neighbours generation retrieved) and `openai_logprobs` puts
the scores in OpenAI's legacy shape. `run` awaits it whole; `StreamEvents` runs it with each piece
handed to the event loop. This module knows no routes and no model kinds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from retro.batch_engine import whole_text_wanted
from retro.language_model import PromptTooLongError
from retro.sampling import SamplingParams, TextPiece
from retro.token_logprobs import (
    RememberedRetrieval,
    TokenScores,
    score_tokens,
    stream_ids,
    token_text,
    vocab_size,
)
from service.errors import APIError
from service.language_models import ServedModel
from service.retrieval import NeighbourRecorder
from service.schemas import SamplingFields
from service.state import ServiceState
from service.workers import JobCancelled, QueueFullError


@dataclass
class GenerationJob:
    """One request's generation, ready for a worker: model, prompt, sampling, neighbour recorder."""

    model: ServedModel
    prompt: str  # the prompt's text (for a token-id prompt: its ids decoded)
    params: SamplingParams
    recorder: NeighbourRecorder | None
    cancel: threading.Event = field(default_factory=threading.Event)
    prompt_ids: list[int] | None = None  # set: fed to the model as they are (token prompts, logprobs)
    generate: bool = True  # False for max_tokens=0: the prompt is only scored
    logprobs: int | None = None  # top-N per token; None: no scoring
    query_start: int = 0  # retrieval queries read prompt[query_start:] (a chat: after its system messages)

    @property
    def scored(self) -> bool:
        return self.logprobs is not None

    def prompt_tokens(self) -> int:
        return (
            len(self.prompt_ids)
            if self.prompt_ids is not None
            else self.model.lm.count_prompt_tokens(self.prompt)
        )


@dataclass
class GenerationOutcome:
    """What a finished (or cancelled) generation job reports."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    retrieval_seconds: float
    neighbours: list[dict]
    cancelled: bool = False
    scores: TokenScores | None = None  # with logprobs: prompt and sampled tokens, scored

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def prepare(
    state: ServiceState,
    model: ServedModel,
    prompt: str | list[int],
    request: SamplingFields,
    *,
    logprobs: int | None = None,
    seed: int | None = None,
    query_start: int = 0,
) -> GenerationJob:
    """A job for one choice; `seed` (default: the request's) lets a request's n choices differ;
    `query_start` keeps the prompt's text before it out of retrieval queries (a chat's system
    messages, `retro.chat_template.ChatPrompt`)."""
    settings = state.settings
    if request.max_tokens > settings.max_tokens_cap:
        raise APIError(
            400,
            f"max_tokens={request.max_tokens} exceeds this server's cap of {settings.max_tokens_cap}",
            "max_tokens",
        )
    prompt_ids = None
    if not isinstance(prompt, str):
        prompt_ids = [int(i) for i in prompt]
        limit = vocab_size(model.lm)
        bad = next((i for i in prompt_ids if i >= limit), None)
        if bad is not None:
            raise APIError(
                400, f"token id {bad} is not in this model's vocabulary (ids 0..{limit - 1})", "prompt"
            )
        prompt = model.lm.decode(prompt_ids)
    elif logprobs is not None:
        prompt_ids = model.lm.encode_prompt(prompt)  # scored as the model sees it
    try:
        params = SamplingParams(
            max_new_tokens=max(request.max_tokens, 1),  # 0 is `generate=False`
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            seed=request.seed if seed is None else seed,
            stop=request.stop_strings,
            first_copy_bias=request.retrieval.first_copy_bias,
            span_weight=request.retrieval.span_weight,
            span_follow=request.retrieval.span_follow,
            first_candidates=request.first_candidates,
        )
    except ValueError as e:
        raise APIError(400, str(e)) from None
    recorder = None
    if model.lm.uses_retrieval and request.retrieval.enabled and state.index is not None:
        k = request.retrieval.k or model.lm.default_k or 2
        if k > settings.max_retrieval_k:
            raise APIError(
                400,
                f"retrieval.k={k} exceeds this server's limit of {settings.max_retrieval_k}",
                "retrieval.k",
            )
        recorder = NeighbourRecorder(state.index.current, k, state.metrics.retrieval_latency.observe)
    return GenerationJob(
        model=model,
        prompt=prompt,
        params=params,
        recorder=recorder,
        prompt_ids=prompt_ids,
        generate=request.max_tokens > 0,
        logprobs=logprobs,
        query_start=query_start,
    )


def check_prompt_length(job: GenerationJob) -> None:
    """Refuses (400, the limit named) a prompt over the model's limit before anything is queued."""
    lm = job.model.lm
    limit = lm.prompt_limit(job.recorder is not None)
    n_tokens = job.prompt_tokens()
    if n_tokens > limit:
        raise as_api_error(PromptTooLongError(n_tokens, limit))


def run_generation(
    job: GenerationJob, on_piece: Callable[[TextPiece, list[dict]], None] | None = None
) -> GenerationOutcome:
    """Blocking: generates, handing each piece (with neighbours found since the last one) to on_piece."""
    # A response sent whole needs its tokens only at the end: the batch engine wakes this thread
    # every few tokens instead of every token (`whole_text_wanted`).
    with whole_text_wanted() if on_piece is None else nullcontext():
        return _generate(job, on_piece)


def _generate(
    job: GenerationJob, on_piece: Callable[[TextPiece, list[dict]], None] | None
) -> GenerationOutcome:
    started = time.perf_counter()
    texts, finish, completion_tokens, sent, cancelled = [], "length", 0, 0, False
    lm, sampled = job.model.lm, []
    # Scoring after generation sees the neighbours generation retrieved, without a second search.
    remembered = RememberedRetrieval(job.recorder) if job.scored and job.recorder is not None else None
    retrieve = remembered or job.recorder
    if not job.generate:
        pieces = iter([TextPiece("", finish_reason="length")])
    elif job.prompt_ids is None:
        pieces = lm.stream(job.prompt, job.params, retrieve, job.query_start)
    else:
        pieces = stream_ids(lm, job.prompt_ids, job.params, retrieve, sampled)
    for piece in pieces:
        completion_tokens += piece.n_tokens
        texts.append(piece.text)
        if piece.finish_reason is not None:
            finish = piece.finish_reason
        if on_piece is not None:
            new = job.recorder.records[sent:] if job.recorder else []
            sent += len(new)
            on_piece(piece, new)
        if job.cancel.is_set():
            cancelled = True
            break
    scores = None
    if job.scored and not cancelled:
        ids = job.prompt_ids + sampled
        replay = remembered.replay if remembered is not None else None
        scores = score_tokens(lm, ids, len(job.prompt_ids), job.logprobs, replay)
    return GenerationOutcome(
        text="".join(texts),
        finish_reason=finish,
        prompt_tokens=job.prompt_tokens(),
        completion_tokens=completion_tokens,
        seconds=time.perf_counter() - started,
        retrieval_seconds=job.recorder.seconds if job.recorder else 0.0,
        neighbours=list(job.recorder.records) if job.recorder else [],
        cancelled=cancelled,
        scores=scores,
    )


def openai_logprobs(job: GenerationJob, scores: TokenScores, echo: bool) -> dict:
    """OpenAI's legacy `logprobs`: `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`.

    Every sampled token is listed (an end-of-text token, or the one that completed a stop string,
    included: the token count is what lm-evaluation-harness relies on); with `echo` the prompt's
    tokens come first, the very first with null. `top_logprobs[i]` holds the N most likely tokens
    and always the chosen one; `text_offset[i]` is where token i starts in the choice's `text`.
    """
    lm, n_prompt = job.model.lm, len(job.prompt_ids)
    first = 0 if echo else n_prompt
    prompt_text = job.prompt if echo else ""
    offsets = []
    for i in range(first, len(scores.ids)):
        if i < n_prompt:
            offsets.append(min(len(lm.decode(scores.ids[:i])), len(prompt_text)))
        else:
            offsets.append(len(prompt_text) + len(lm.decode(scores.ids[n_prompt:i])))
    tokens = [token_text(lm, t) for t in scores.ids[first:]]
    top_logprobs: list[dict | None] = []
    for token, logprob, top in zip(tokens, scores.logprobs[first:], scores.top[first:], strict=True):
        if top is None:
            top_logprobs.append(None)
            continue
        alternatives: dict[str, float] = {}
        for token_id, value in top:
            alternatives.setdefault(token_text(lm, token_id), value)
        alternatives.setdefault(token, logprob)
        top_logprobs.append(alternatives)
    return {
        "tokens": tokens,
        "token_logprobs": scores.logprobs[first:],
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def record_outcome(state: ServiceState, model: ServedModel, outcome: GenerationOutcome) -> None:
    m = state.metrics
    m.tokens_generated.labels(model.id).inc(outcome.completion_tokens)
    m.prompt_tokens.labels(model.id).inc(outcome.prompt_tokens)
    m.generation_latency.labels(model.id).observe(outcome.seconds)
    if outcome.cancelled:
        m.generations_cancelled.labels(model.id).inc()


def as_api_error(error: BaseException) -> APIError:
    """Maps what a generation job can raise to the client's error (anything else stays a 500)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, PromptTooLongError):
        return APIError(400, f"{error}; shorten the prompt", "prompt", "context_length_exceeded")
    if isinstance(error, QueueFullError):
        return APIError(429, str(error), code="queue_full")
    if isinstance(error, JobCancelled):
        return APIError(499, "the request was cancelled")
    raise error


async def unless_disconnected(request, awaitable, cancel: threading.Event, poll_s: float = 0.2):
    """Awaits `awaitable`, but gives up (and cancels the job) as soon as the client has gone."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if request is not None and await request.is_disconnected():
                raise APIError(499, "the client closed the request")
    except BaseException:
        cancel.set()
        task.cancel()
        raise


async def run(state: ServiceState, job: GenerationJob, request=None) -> GenerationOutcome:
    """Queues the job on its model's worker and awaits the outcome (errors as APIError)."""
    worker = state.workers[job.model.id]
    try:
        outcome = await unless_disconnected(
            request, worker.run(lambda: run_generation(job), job.cancel), job.cancel
        )
    except (PromptTooLongError, QueueFullError, JobCancelled) as e:
        raise as_api_error(e) from None
    record_outcome(state, job.model, outcome)
    return outcome


class StreamEvents:
    """Pieces of a generation running on a worker, as an async iterator of ("piece"|"done"|"error", ...)."""

    def __init__(self, state: ServiceState, job: GenerationJob):
        self.state, self.job = state, job
        self.queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def push(item) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        def work() -> GenerationOutcome:
            try:
                outcome = run_generation(job, lambda piece, new: push(("piece", piece, new)))
            except BaseException as e:
                push(("error", e, None))
                raise
            record_outcome(state, job.model, outcome)  # here, so a cancelled stream is counted too
            push(("done", outcome, None))
            return outcome

        try:
            self.future = state.workers[job.model.id].submit(work, job.cancel)
        except QueueFullError as e:
            raise as_api_error(e) from None

    async def next(self):
        try:
            return await self.queue.get()
        except asyncio.CancelledError:
            self.job.cancel.set()
            raise

    def cancel(self) -> None:
        self.job.cancel.set()
