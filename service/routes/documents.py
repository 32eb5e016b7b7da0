"""POST /v1/documents: add documents to the serving index; searchable as soon as the call returns.

Needs the API key when one is configured. Encoding runs off the event loop; a document whose id
is already in the index is reported as skipped, not added twice.
"""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter

from index.corpus import Document
from service.deps import ApiKey, AppSettings, Index, Metrics, ReadyState
from service.errors import APIError
from service.schemas import DocumentsRequest

router = APIRouter(tags=["index"])


@router.post("/v1/documents")
async def add_documents(
    body: DocumentsRequest,
    _: ApiKey,
    state: ReadyState,
    index: Index,
    settings: AppSettings,
    metrics: Metrics,
):
    if len(body.documents) > settings.max_documents_per_request:
        raise APIError(
            400,
            f"{len(body.documents)} documents in one request exceed the limit of "
            f"{settings.max_documents_per_request}",
            "documents",
        )
    documents = [
        Document(doc_id=d.id or f"api-{uuid.uuid4().hex[:16]}", text=d.text, source="api", title=d.title)
        for d in body.documents
    ]
    report = await asyncio.to_thread(state.jobs.add_documents, documents)
    snapshot = index.current
    state.note_index(snapshot)
    metrics.documents_added.inc(report.n_documents)
    return {
        "object": "index.addition",
        "added": report.n_documents,
        "chunks": report.n_chunks,
        "documents": [
            {"id": d.doc_id, "added": reason is None, "reason": reason}
            for d, reason in zip(documents, report.outcomes, strict=True)
        ],
        "index": snapshot.info(),
        "seconds": round(report.seconds, 4),
    }
