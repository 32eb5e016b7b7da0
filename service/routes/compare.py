"""POST /v1/compare: one prompt through RETRO and the comparison models with the same sampling.

The comparison models are the second model (`--compare-model`: a baseline or a Hugging Face
model, role "comparison") and the retrieval-in-prompt comparator (`--rag-model`, role "rag"),
whichever are served, in that order after RETRO. They run one after the other (on 2 cores,
running them together would distort the timings); each result carries its text, latency,
tokens/s and parameter counts, and the neighbours it retrieved (RETRO's per chunk; the rag
model's, the passages in its prompt).
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
    models = [m for m in (state.retro, state.compare, state.rag) if m is not None]
    if len(models) < 2:
        raise APIError(
            400, "this server has no comparison model (start it with --compare-model or --rag-model)"
        )
    jobs = [generation.prepare(state, model, body.prompt, body) for model in models]
    results = []
    for model, job in zip(models, jobs, strict=True):
        outcome = await generation.run(state, job, request)
        results.append(_result(model, outcome, state.role(model)))
    return {
        "object": "comparison",
        "prompt": body.prompt,
        "sampling": body.model_dump(exclude={"prompt"}),
        "results": results,
    }
