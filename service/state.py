"""What a running service holds: the models, their workers, the index and the rebuild jobs.

`ServiceState.load()` does the heavy, blocking work (checkpoints, the MiniLM encoder, faiss) and
is run in a thread by the app's lifespan, so `/health` can answer 503 while it runs and the reason
if it failed. This module owns loading, consistency checks between model and index, and shutdown.
"""

from __future__ import annotations

import logging
import time

import torch

from index.version import neighbour_window
from retro.in_context import InContextLanguageModel
from service.batching import start_worker
from service.jobs import RebuildJobs
from service.language_models import ServedModel, load_served_model
from service.metrics import ServiceMetrics
from service.retrieval import IndexHandle, IndexSnapshot
from service.settings import Settings
from service.workers import ModelWorker

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: Settings, metrics: ServiceMetrics):
        self.settings, self.metrics = settings, metrics
        self.status = "loading"  # loading | ready | failed
        self.error: str | None = None
        self.retro: ServedModel | None = None  # the model named by --model (default for requests)
        self.compare: ServedModel | None = None
        self.rag: ServedModel | None = None  # the retrieval-in-prompt comparator (--rag-model)
        self.workers: dict[str, ModelWorker] = {}
        self.index: IndexHandle | None = None
        self.jobs: RebuildJobs | None = None
        self.started = time.time()
        self.load_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    @property
    def models(self) -> dict[str, ServedModel]:
        return {m.id: m for m in (self.retro, self.compare, self.rag) if m is not None}

    def role(self, model: ServedModel) -> str:
        """What a served model is here: "retro" (--model), "comparison" or "rag" (retrieval in prompt)."""
        if model is self.retro:
            return "retro"
        return "rag" if model is self.rag else "comparison"

    def load(self) -> None:
        started = time.perf_counter()
        try:
            self._load()
        except Exception as e:
            log.exception("loading failed")
            self.status, self.error = "failed", f"{type(e).__name__}: {e}"
            return
        self.load_seconds = time.perf_counter() - started
        self.status = "ready"
        log.info("ready in %.1fs", self.load_seconds)

    def _load(self) -> None:
        s = self.settings
        if s.model is None:
            raise ValueError("no model configured: pass --model or set RETRO_MODEL")
        if s.torch_threads is not None:
            # before the worker threads start: a thread takes the intra-op thread count it is born with
            torch.set_num_threads(s.torch_threads)
        self.retro = load_served_model(s.model, s.retro_model_id, s.device)
        if s.compare_model is not None:
            compare_id = s.compare_model_id
            if compare_id == self.retro.id:
                compare_id = f"{compare_id}-compare"
            self.compare = load_served_model(s.compare_model, compare_id, s.device)
        if s.rag_model is not None:
            rag_id = s.rag_model_id
            if rag_id in self.models:
                rag_id = f"{rag_id}-rag"
            self.rag = load_served_model(s.rag_model, rag_id, s.device)
            self._check_rag(self.rag)
        if s.index is not None:
            self.index = IndexHandle(
                s.index,
                self.retro.lm.tokenizer,
                s.index_device,
                s.retrieval,
                encoder_backend=s.encoder_backend,
                encoder_cache=s.encoder_cache,
                window=self._neighbour_window(),
            )
            self._check_index_fits(self.index.current)
            self.jobs = RebuildJobs(
                self.index,
                self.index.current.store.chunk_size,
                on_swap=self.note_index,
                keep_versions=s.keep_index_versions,
            )
            self.note_index(self.index.current)
        for model in self.models.values():  # a RETRO model's lm becomes its batched form here
            self.workers[model.id] = start_worker(model, s, self.metrics)

    def _neighbour_window(self) -> int:
        """Chunks a retrieved neighbour shows: enough for every served model that reads neighbours
        (each fits them to its own `retrieved_len`)."""
        readers = [model.lm for model in self.models.values() if model.lm.retrieved_len]
        return max((neighbour_window(lm.chunk_size, lm.retrieved_len) for lm in readers), default=2)

    def _check_index_fits(self, snapshot: IndexSnapshot) -> None:
        model = self.retro.lm
        if model.uses_retrieval and snapshot.store.chunk_size != model.chunk_size:
            raise ValueError(
                f"the index at {self.settings.index} has chunk_size {snapshot.store.chunk_size}, "
                f"the model {model.chunk_size}: build the index with --chunk-size {model.chunk_size}"
            )

    def _check_rag(self, rag: ServedModel) -> None:
        """The comparator reads the index's passages as token ids: its tokenizer must be RETRO's."""
        if not isinstance(rag.lm, InContextLanguageModel):
            raise ValueError(
                f"the rag model {self.settings.rag_model} is not a retrieval-in-prompt checkpoint "
                "(in_context=True, e.g. `retro train --preset demo-rag`)"
            )
        if rag.lm.tokenizer.fingerprint != self.retro.lm.tokenizer.fingerprint:
            raise ValueError(
                f"the rag model {self.settings.rag_model} has another tokenizer than {self.settings.model}: "
                "train it on the same index"
            )

    def note_index(self, snapshot: IndexSnapshot) -> None:
        self.metrics.index_documents.set(snapshot.store.n_live_documents)
        self.metrics.index_chunks.set(snapshot.store.n_live_chunks)

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
