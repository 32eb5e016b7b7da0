"""POST /v1/retrieve: a query -> its k nearest chunks from the serving index, with scores."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from service.deps import AppSettings, Index, Metrics
from service.errors import APIError
from service.retrieval import neighbour_record
from service.schemas import RetrieveRequest

router = APIRouter(tags=["retrieval"])


@router.post("/v1/retrieve")
async def retrieve(body: RetrieveRequest, index: Index, settings: AppSettings, metrics: Metrics):
    if body.k > settings.max_retrieval_k:
        raise APIError(400, f"k={body.k} exceeds this server's limit of {settings.max_retrieval_k}", "k")
    snapshot = index.current
    started = time.perf_counter()
    found = await asyncio.to_thread(snapshot.retriever.search, [body.query], body.k)
    seconds = time.perf_counter() - started
    metrics.retrieval_latency.observe(seconds)
    return {
        "object": "list",
        "query": body.query,
        "index_version": snapshot.store.version,
        "latency_s": round(seconds, 6),
        "data": neighbour_record(found[0]),
    }
