"""POST /v1/documents adds documents to the serving index, searchable as soon as the call returns;
DELETE /v1/documents/{doc_id} removes one, never retrieved again from the moment the call returns.

Both need the API key when one is configured and run off the event loop. A document whose id is
already in the index is reported as skipped, not added twice, unless the request says `replace`:
then the new text takes the old one's place in one commit of the index (a search sees one or the
other, never both, never neither; `"replaced": true` in its entry). A removed document's id may be
added again, as a new document. Removing an id the index does not hold (never added, or removed
already) is a 404.
"""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter

from index.corpus import Document
from index.store import DOC_ALREADY_REMOVED, DOC_REMOVED
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
    report = await asyncio.to_thread(state.jobs.add_documents, documents, body.replace)
    replaced = set(report.replaced)
    snapshot = index.current
    state.note_index(snapshot)
    metrics.documents_added.inc(report.n_documents)
    return {
        "object": "index.addition",
        "added": report.n_documents,
        "chunks": report.n_chunks,
        "documents": [
            {
                "id": d.doc_id,
                "added": reason is None,
                "replaced": reason is None and d.doc_id in replaced,
                "reason": reason,
            }
            for d, reason in zip(documents, report.outcomes, strict=True)
        ],
        "index": snapshot.info(),
        "seconds": round(report.seconds, 4),
    }


@router.delete("/v1/documents/{doc_id:path}")
async def remove_document(doc_id: str, _: ApiKey, state: ReadyState, index: Index):
    report = await asyncio.to_thread(state.jobs.remove_documents, [doc_id])
    outcome = report.outcomes[0]
    if outcome != DOC_REMOVED:
        already = " (it was removed already)" if outcome == DOC_ALREADY_REMOVED else ""
        raise APIError(404, f"no document {doc_id!r} in the index{already}", "doc_id", "document_not_found")
    snapshot = index.current
    state.note_index(snapshot)
    return {
        "object": "index.removal",
        "id": doc_id,
        "removed": True,
        "chunks": report.n_chunks,
        "index": snapshot.info(),
        "seconds": round(report.seconds, 4),
    }
