"""POST /v1/index/rebuild starts a background rebuild; GET /v1/index/jobs/{id} reports its progress.

The source must be an allowed named source or a path under the configured corpus root; the old
version serves until the new one is complete, then they swap between requests.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ApiKey, AppSettings, Index, ReadyState
from service.errors import APIError
from service.jobs import resolve_corpus_source
from service.schemas import RebuildRequest

router = APIRouter(tags=["index"])


@router.post("/v1/index/rebuild", status_code=202)
async def start_rebuild(
    body: RebuildRequest, _: ApiKey, state: ReadyState, index: Index, settings: AppSettings
):
    source = resolve_corpus_source(body.source, settings.corpus_root, settings.rebuild_sources)
    return state.jobs.start(source).to_dict()


@router.get("/v1/index/jobs/{job_id}")
async def get_job(job_id: str, state: ReadyState, index: Index):
    job = state.jobs.get(job_id)
    if job is None:
        raise APIError(404, f"no rebuild job {job_id!r}", "job_id")
    return job.to_dict()
