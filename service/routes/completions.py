"""POST /v1/completions: OpenAI's text-completion API, plus `top_k`, `retrieval` and its neighbours.

Plain requests get one JSON body; `stream: true` gets server-sent events in OpenAI's chunk format:
first a chunk holding the prompt's neighbours (`retrieval`), then text chunks (a chunk also carries
any neighbours retrieved at a new chunk boundary), the last with `finish_reason`, with
`stream_options.include_usage` a usage chunk, then `data: [DONE]`. Errors found before the first
byte (prompt too long, queue full) are plain JSON errors; a client that goes away stops its
generation.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service import generation
from service.deps import ReadyState, find_model
from service.schemas import CompletionRequest

router = APIRouter(tags=["completions"])


def _choice(text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _usage(outcome) -> dict:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, state: ReadyState, request: Request):
    model = find_model(state, body.model)
    job = generation.prepare(state, model, body.prompt_text, body)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    header = {"id": completion_id, "object": "text_completion", "created": created, "model": model.id}
    if not body.stream:
        outcome = await generation.run(state, job, request)
        return {
            **header,
            "choices": [_choice(outcome.text, outcome.finish_reason)],
            "usage": _usage(outcome),
            "retrieval": outcome.neighbours,
        }

    events = generation.StreamEvents(state, job)
    # Prefill happens before the first event: a too-long prompt is still a JSON error. A client
    # that leaves while the request waits in the queue cancels it before it starts.
    first = await generation.unless_disconnected(request, events.next(), job.cancel)
    if first[0] == "error":
        raise generation.as_api_error(first[1])

    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def event_stream():
        item = first
        try:
            if item[0] == "piece":  # the retrieval block comes first
                yield sse({**header, "choices": [_choice("", None)], "retrieval": item[2]})
            while True:
                kind, value, neighbours = item
                if kind == "piece":
                    chunk = {**header, "choices": [_choice(value.text, value.finish_reason)]}
                    if neighbours and item is not first:
                        chunk["retrieval"] = neighbours
                    yield sse(chunk)
                elif kind == "done":
                    if body.stream_options and body.stream_options.include_usage:
                        yield sse({**header, "choices": [], "usage": _usage(value)})
                    break
                else:  # an error after the first byte can only be reported in-band
                    yield sse({"error": {"message": f"generation failed: {value}", "type": "server_error"}})
                    break
                item = await events.next()
            yield "data: [DONE]\n\n"
        finally:
            events.cancel()  # the client went away (or we are done): stop generating

    return StreamingResponse(
        event_stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
