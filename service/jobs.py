"""Background index rebuilds: one at a time, with progress, while the old version keeps serving.

A rebuild reads an allowed corpus, calls `index.build.build_index` (which writes a new version and
switches CURRENT atomically), then the `IndexHandle` reopens CURRENT and swaps it in. Documents
added and removed through the API while the rebuild ran are added again to, and removed again
from, the new version before the swap, in the order they came, so no acknowledged addition is lost
and no acknowledged removal comes back (a removal acknowledged before the rebuild started is not
replayed: the new version holds what its source holds). After the swap, versions beyond the
newest `keep_versions` are deleted (`index.prune`). This module owns the job table and the source
checks; it knows nothing of HTTP beyond raising `APIError`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from index.build import build_index
from index.corpus import Document, SkippedInput
from index.prune import prune_versions
from index.sources import NAMED_SOURCES, read_sources
from index.store import DOC_REMOVED, RemoveReport
from service.errors import APIError
from service.retrieval import IndexHandle

log = logging.getLogger(__name__)


def resolve_corpus_source(source: str, corpus_root: Path | None, allowed_named: list[str]) -> str:
    """An allowed named source, or a path that lies under corpus_root after resolving symlinks."""
    if source in NAMED_SOURCES:
        if source not in allowed_named:
            raise APIError(403, f"the named source {source!r} is not enabled on this server", "source")
        return source
    if corpus_root is None:
        raise APIError(
            403, "rebuilds from paths are disabled: the server has no corpus root (RETRO_CORPUS_ROOT)"
        )
    if ".." in Path(source).parts:
        raise APIError(400, "the source path must not contain '..'", "source")
    if "\x00" in source:
        raise APIError(400, "the source path contains a NUL character", "source")
    root = corpus_root.resolve()
    candidate = Path(source) if Path(source).is_absolute() else root / source
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise APIError(400, f"no corpus at {source!r} under the corpus root", "source") from None
    if not resolved.is_relative_to(root):
        raise APIError(403, "the source lies outside the corpus root", "source")
    return str(resolved)


@dataclass
class RebuildJob:
    id: str
    source: str
    status: str = "queued"  # queued | running | succeeded | failed
    stage: str = "queued"
    done: int = 0
    total: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    version: str | None = None
    report: dict | None = None

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "object": "index.rebuild",
            "source": self.source,
            "status": self.status,
            "progress": {"stage": self.stage, "done": self.done, "total": self.total},
            "error": self.error,
            "created": int(self.created),
            "finished": int(self.finished) if self.finished else None,
            "version": self.version,
            "report": self.report,
        }


class RebuildJobs:
    def __init__(self, handle: IndexHandle, chunk_size: int, on_swap=None, keep_versions: int | None = None):
        self.handle, self.chunk_size = handle, chunk_size
        self.keep_versions = keep_versions  # None keeps every version
        self._jobs: dict[str, RebuildJob] = {}
        self._lock = threading.Lock()
        self._running: RebuildJob | None = None
        # API changes while a rebuild runs, in order: ("add", documents) or ("remove", doc ids)
        self._changes_during: list[tuple[str, list]] = []
        self._on_swap = on_swap or (lambda snapshot: None)

    def get(self, job_id: str) -> RebuildJob | None:
        return self._jobs.get(job_id)

    def add_documents(self, documents: list[Document], replace: bool = False):
        """Adds documents to the serving version (a running rebuild re-adds them to its new one);
        with `replace`, one whose id the version holds takes that document's place (in the new
        version too).

        The lock makes "add to the serving version" and "remember for the rebuild" one step with
        respect to the swap: a document lands either before the swap (and is re-added) or after.
        """
        with self._lock:
            report = self.handle.current.store.add_documents(documents, replace=replace)
            if self._running is not None:
                self._changes_during.append(("replace" if replace else "add", list(documents)))
        return report

    def remove_documents(self, doc_ids: list[str]) -> RemoveReport:
        """Removes documents from the serving version (a running rebuild removes them from its new
        one too, before the swap), under the same lock as `add_documents`."""
        with self._lock:
            report = self.handle.current.store.remove_documents(doc_ids)
            if self._running is not None:
                outcomes = zip(report.doc_ids, report.outcomes, strict=True)
                removed = [doc_id for doc_id, outcome in outcomes if outcome == DOC_REMOVED]
                if removed:
                    self._changes_during.append(("remove", removed))
        return report

    def start(self, source: str) -> RebuildJob:
        with self._lock:
            if self._running is not None:
                raise APIError(409, f"rebuild {self._running.id} is still running; one rebuild at a time")
            job = RebuildJob(id=f"rebuild-{uuid.uuid4().hex[:12]}", source=source)
            self._jobs[job.id] = job
            self._running = job
            self._changes_during = []
        threading.Thread(target=self._run, args=(job,), name=f"index-{job.id}", daemon=True).start()
        return job

    def _progress(self, job: RebuildJob):
        def note(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, done, total

        return note

    def _prune(self) -> list[str]:
        """Deletes old versions once the new one serves. Not inside build_index (keep_versions): between
        its CURRENT switch and the swap, API additions still go to the old version, which it could
        delete under them; from the swap on (under the lock) they go to the new one. Searches still
        running on the old version keep their memmaps. A failure here does not fail the rebuild."""
        if self.keep_versions is None:
            return []
        try:
            return prune_versions(self.handle.path, self.keep_versions)
        except (OSError, ValueError):
            log.exception("pruning old index versions of %s failed", self.handle.path)
            return []

    @staticmethod
    def _replay(store, changes: list[tuple[str, list]]) -> tuple[int, int]:
        """Applies the API's additions and removals made during a rebuild to the new version, in
        order; returns (documents given again to add, documents removed from the new version)."""
        readded = removed = 0
        for kind, items in changes:
            if kind in ("add", "replace"):
                store.add_documents(items, replace=kind == "replace")
                readded += len(items)
            else:
                removed += store.remove_documents(items).n_documents
        return readded, removed

    def _run(self, job: RebuildJob) -> None:
        job.status = "running"
        try:
            skipped: list[SkippedInput] = []
            job.stage = "read"
            documents = list(read_sources([job.source], skipped))
            handle = self.handle
            report = build_index(
                documents,
                handle.path,
                handle.tokenizer,
                handle.encoder,
                chunk_size=self.chunk_size,
                skipped=skipped,
                sources=[job.source],
                progress=self._progress(job),
            )
            job.stage = "swap"
            with self._lock:
                # Rebuild is done; anything added from here on goes to the new version directly.
                snapshot = handle.reopen()
                changes, self._changes_during = self._changes_during, []
                readded, removed = self._replay(snapshot.store, changes)
                self._running = None
            self._on_swap(snapshot)
            pruned = self._prune()
            job.version = snapshot.store.version
            job.report = {
                "documents": report.n_documents,
                "chunks": report.n_chunks,
                "skipped": len(report.skipped),
                "readded_live_documents": readded,
                "removed_live_documents": removed,
                "pruned_versions": pruned,
                "seconds": round(report.build_seconds, 3),
            }
            job.status, job.stage = "succeeded", "done"
        except Exception as e:  # reported through the job, never raised into a request
            log.exception("rebuild %s failed", job.id)
            job.status, job.error = "failed", f"{type(e).__name__}: {e}"
            with self._lock:
                self._running = None
        finally:
            job.finished = time.time()
