"""GET /health (200 ready, 503 loading or failed), GET /info, GET /metrics (Prometheus text)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.deps import Metrics, ReadyState, State
from service.errors import error_body

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(state: State):
    if state.ready:
        return {"status": "ready"}
    message = "loading" if state.status == "loading" else f"failed to load: {state.error}"
    return JSONResponse({"status": state.status, **error_body(503, message)}, status_code=503)


def _defaults(lm) -> dict:
    """A model's own settings of generation that a request may override: k neighbours per chunk,
    the retrieval query's tokens, the first token's copy bias, lookahead candidates and span reader
    weight and follow (RETRO's decoder; a model without one of them lacks the key)."""
    names = ("k", "query_tokens", "first_copy_bias", "first_candidates", "span_weight", "span_follow")
    if not lm.uses_retrieval:
        names = ("first_candidates",)
    values = {name: getattr(lm, "default_k" if name == "k" else name, None) for name in names}
    return {name: value for name, value in values.items() if value is not None}


@router.get("/info")
async def info(state: ReadyState):
    settings = state.settings
    return {
        "status": state.status,
        "uptime_s": round(time.time() - state.started, 1),
        "load_s": round(state.load_seconds or 0.0, 2),
        "device": settings.device,
        "models": [
            {
                "id": m.id,
                "role": state.role(m),
                "kind": m.lm.kind,
                "path": str(m.path),
                "parameters": m.parameters,
                "context_length": m.lm.max_seq_len,
                "chunk_size": m.lm.chunk_size,
                "uses_retrieval": m.lm.uses_retrieval,
                "defaults": _defaults(m.lm),  # what a request that names none of these gets
                "queue_depth": state.workers[m.id].depth,
                "running": state.workers[m.id].running,
                "max_batch": state.workers[m.id].max_running,  # requests decoded together
            }
            for m in state.models.values()
        ],
        "index": state.index.current.info() if state.index else None,
        "limits": {
            "max_tokens": settings.max_tokens_cap,
            "max_body_bytes": settings.max_body_bytes,
            "max_queue": settings.max_queue,
            "max_retrieval_k": settings.max_retrieval_k,
        },
        "auth_required_for_writes": settings.api_key is not None,
    }


@router.get("/metrics")
async def metrics(metrics: Metrics):
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
