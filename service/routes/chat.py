"""POST /v1/chat/completions: OpenAI's chat API over the plain-text chat template, plus `retrieval`.

The messages become one prompt by `retro.chat_template` (no role markers: the turns' texts joined
by a space, the prompt ending where the assistant's answer starts), and that prompt runs through
the completion machinery (`service.generation`: the same sampling checks, worker queue, retrieval
and cancellation as /v1/completions), for the model `model` names (RETRO by default, or the
comparison model); the leading system messages stay out of the retrieval queries
(`ChatPrompt.query_start`). The reply is the generated text with the template's leading space removed.

Plain requests get one `chat.completion` body; `stream: true` gets server-sent
`chat.completion.chunk`s: first `delta: {"role": "assistant", "content": ""}` with the prompt's
neighbours (`retrieval`), then `delta: {"content": ...}` pieces (a piece also carries neighbours
retrieved at a new chunk boundary), the last with `finish_reason`, with
`stream_options.include_usage` a usage chunk with empty `choices`, then `data: [DONE]`.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from retro.chat_template import ChatPrompt, ChatTurn, generation_prompt, reply_text
from service import generation
from service.deps import ReadyState, find_model
from service.errors import APIError
from service.schemas import ChatCompletionRequest

router = APIRouter(tags=["chat"])


def chat_prompt(messages) -> ChatPrompt:
    """The request's messages rendered by the chat template (400 when no message has text)."""
    try:
        return generation_prompt([ChatTurn(m.template_role, m.text) for m in messages])
    except ValueError as e:
        raise APIError(400, str(e), "messages") from None


def _for_messages(error: APIError) -> APIError:
    """A too-long prompt is reported against `messages`, the field a chat client sent."""
    if error.param == "prompt":
        error.param = "messages"
    return error


def _usage(outcome) -> dict:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
    }


class _ReplyStart:
    """Strips the template's leading whitespace from a streamed reply, across pieces."""

    def __init__(self, prompt: ChatPrompt):
        self.pending = not prompt.continues_assistant

    def __call__(self, text: str) -> str:
        if self.pending:
            text = text.lstrip()
            self.pending = not text
        return text


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, state: ReadyState, request: Request):
    model = find_model(state, body.model)
    prompt = chat_prompt(body.messages)
    job = generation.prepare(state, model, prompt.text, body, query_start=prompt.query_start)
    header = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.id,
    }
    if not body.stream:
        try:
            outcome = await generation.run(state, job, request)
        except APIError as e:
            raise _for_messages(e) from None
        message = {"role": "assistant", "content": reply_text(outcome.text, prompt)}
        return {
            **header,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": outcome.finish_reason}
            ],
            "usage": _usage(outcome),
            "retrieval": outcome.neighbours,
        }

    events = generation.StreamEvents(state, job)
    # Prefill happens before the first event: a too-long prompt is still a JSON error.
    first = await generation.unless_disconnected(request, events.next(), job.cancel)
    if first[0] == "error":
        raise _for_messages(generation.as_api_error(first[1]))
    header["object"] = "chat.completion.chunk"
    reply_start = _ReplyStart(prompt)

    def sse(payload: dict) -> str:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**header, "choices": [choice]}

    async def event_stream():
        item = first
        try:
            role = chunk({"role": "assistant", "content": ""})
            yield sse({**role, "retrieval": item[2] if item[0] == "piece" else []})
            while True:
                kind, value, neighbours = item
                if kind == "piece":
                    text = reply_start(value.text)
                    fresh = neighbours if item is not first else None  # the first ones rode on the role chunk
                    if text or value.finish_reason or fresh:
                        payload = chunk({"content": text} if text else {}, value.finish_reason)
                        if fresh:
                            payload["retrieval"] = fresh
                        yield sse(payload)
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
