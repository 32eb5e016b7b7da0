"""POST /v1/compare: one prompt through RETRO and the comparison model with the same sampling.

The two run one after the other (on 2 cores, running them together would distort both timings);
each result carries its text, latency, tokens/s and parameter counts, RETRO's its neighbours.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import generation
from service.deps import ReadyState
from service.errors import APIError
from service.schemas import CompareRequest

router = APIRouter(tags=["compare"])


def _result(model, outcome, role: str) -> dict:
    return {
        "model": model.id,
        "role": role,
        "kind": model.lm.kind,
        "text": outcome.text,
        "finish_reason": outcome.finish_reason,
        "latency_s": round(outcome.seconds, 4),
        "retrieval_latency_s": round(outcome.retrieval_seconds, 4),
        "tokens_per_s": round(outcome.tokens_per_second, 2),
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "parameters": model.parameters,
        "retrieval": outcome.neighbours,
    }


@router.post("/v1/compare")
async def compare(body: CompareRequest, state: ReadyState, request: Request):
    if state.compare is None:
        raise APIError(400, "this server has no comparison model (start it with --compare-model)")
    jobs = [
        generation.prepare(state, state.retro, body.prompt, body),
        generation.prepare(state, state.compare, body.prompt, body),
    ]
    retro_outcome = await generation.run(state, jobs[0], request)
    compare_outcome = await generation.run(state, jobs[1], request)
    return {
        "object": "comparison",
        "prompt": body.prompt,
        "sampling": body.model_dump(exclude={"prompt"}),
        "results": [
            _result(state.retro, retro_outcome, "retro"),
            _result(state.compare, compare_outcome, "comparison"),
        ],
    }
