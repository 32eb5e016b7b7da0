"""POST /v1/completions: OpenAI's text-completion API, plus `top_k`, `retrieval` and its neighbours.

`prompt` takes OpenAI's four forms (a string, a list of strings, a list of token ids, a list of
token-id lists; token ids go to the model as they are); each prompt gets `n` choices, numbered
prompt by prompt (`index` = prompt * n + j), run one after another. With a `seed`, choice j of a
prompt samples with seed + j, so the n choices differ but are reproducible. `logprobs` (0..20)
scores every token in OpenAI's legacy shape, `echo` puts the prompt (and, with `logprobs`, its
tokens, the first with null) before the completion, and `max_tokens: 0` with both scores a text
without generating, as lm-evaluation-harness's log-likelihood requests need.

Plain requests get one JSON body; every choice carries its own `retrieval`, and the top-level
`retrieval` is the first choice's. `stream: true` gets server-sent events in OpenAI's chunk format,
choice after choice: first a chunk holding the choice's prompt neighbours (`retrieval`), then text
chunks (a chunk also carries any neighbours retrieved at a new chunk boundary), the last with
`finish_reason`; with `stream_options.include_usage` a usage chunk, then `data: [DONE]`. A choice
with `logprobs` is scored after it is generated, so its text comes in one chunk with its logprobs.
Errors found before the first byte (prompt too long, queue full) are plain JSON errors; a client
that goes away stops its generation.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service import generation
from service.deps import ReadyState, find_model
from service.errors import APIError, error_body
from service.schemas import MAX_SEED, CompletionRequest

router = APIRouter(tags=["completions"])


def _choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None = None) -> dict:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def _usage(outcomes, n: int) -> dict:
    """Each prompt's tokens counted once (as OpenAI does for n > 1), every choice's completion."""
    prompt_tokens = sum(o.prompt_tokens for o in outcomes[::n]) if outcomes else 0
    completion_tokens = sum(o.completion_tokens for o in outcomes)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _jobs(state, model, body: CompletionRequest) -> list[generation.GenerationJob]:
    """One job per choice, prompt by prompt; a prompt over the model's limit is refused here."""
    jobs = []
    for prompt in body.prompts:
        for j in range(body.n):
            seed = None if body.seed is None else (body.seed + j) % (MAX_SEED + 1)
            job = generation.prepare(state, model, prompt, body, logprobs=body.logprobs, seed=seed)
            if j == 0:
                generation.check_prompt_length(job)
            jobs.append(job)
    return jobs


def _final_choice(index: int, job, outcome, echo: bool) -> dict:
    text = (job.prompt if echo else "") + outcome.text
    logprobs = generation.openai_logprobs(job, outcome.scores, echo) if outcome.scores else None
    return _choice(index, text, outcome.finish_reason, logprobs)


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, state: ReadyState, request: Request):
    model = find_model(state, body.model)
    jobs = _jobs(state, model, body)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    header = {"id": completion_id, "object": "text_completion", "created": created, "model": model.id}
    if not body.stream:
        outcomes = [await generation.run(state, job, request) for job in jobs]
        choices = [
            {**_final_choice(i, job, outcome, body.echo), "retrieval": outcome.neighbours}
            for i, (job, outcome) in enumerate(zip(jobs, outcomes, strict=True))
        ]
        return {
            **header,
            "choices": choices,
            "usage": _usage(outcomes, body.n),
            "retrieval": outcomes[0].neighbours,
        }

    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def start(job):
        """("scored", outcome) for a logprobs choice (run whole), else ("events", events, first item)."""
        if job.scored:
            return ("scored", await generation.run(state, job, request))
        events = generation.StreamEvents(state, job)
        # Prefill happens before the first event. A client that leaves while the request waits in
        # the queue cancels it before it starts.
        first = await generation.unless_disconnected(request, events.next(), job.cancel)
        if first[0] == "error":
            events.cancel()
            raise generation.as_api_error(first[1])
        return ("events", events, first)

    opened = await start(jobs[0])  # errors before the first byte are still JSON errors

    async def choice_chunks(index: int, job, started, outcomes: list):
        if started[0] == "scored":
            outcome = started[1]
            outcomes.append(outcome)
            yield sse({**header, "choices": [_choice(index, "", None)], "retrieval": outcome.neighbours})
            yield sse({**header, "choices": [_final_choice(index, job, outcome, body.echo)]})
            return
        _, events, item = started
        echo = job.prompt if body.echo else ""
        try:
            if item[0] == "piece":  # the retrieval block comes first
                yield sse({**header, "choices": [_choice(index, "", None)], "retrieval": item[2]})
            while True:
                kind, value, neighbours = item
                if kind == "piece":
                    chunk = {**header, "choices": [_choice(index, echo + value.text, value.finish_reason)]}
                    echo = ""
                    if neighbours and item is not started[2]:
                        chunk["retrieval"] = neighbours
                    yield sse(chunk)
                elif kind == "done":
                    outcomes.append(value)
                    return
                else:  # an error after the first byte can only be reported in-band
                    raise RuntimeError(f"generation failed: {value}")
                item = await events.next()
        finally:
            events.cancel()  # the client went away (or we are done): stop generating

    async def event_stream():
        outcomes: list = []
        try:
            try:
                for index, job in enumerate(jobs):
                    started = opened if index == 0 else await start(job)
                    async for chunk in choice_chunks(index, job, started, outcomes):
                        yield chunk
                if body.stream_options and body.stream_options.include_usage:
                    yield sse({**header, "choices": [], "usage": _usage(outcomes, body.n)})
            except APIError as e:  # a later choice refused (queue full): reported in-band
                yield sse(error_body(e.status, e.message, e.param, e.code))
            except RuntimeError as e:
                yield sse({"error": {"message": str(e), "type": "server_error"}})
            yield "data: [DONE]\n\n"
        finally:
            for job in jobs:  # the client left (or all are done): no choice goes on or starts
                job.cancel.set()

    return StreamingResponse(
        event_stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
