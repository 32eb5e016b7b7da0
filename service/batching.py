"""Serving a model with continuous batching: its worker, its batch engine, one search per step.

`start_worker(model, settings, metrics)` gives each served model its `ModelWorker`. A RETRO model
(with `max_batch` > 1) is swapped for a `retro.batch_engine.BatchedRetroLanguageModel` over the
same network and tokenizer, and its worker runs up to `max_batch` generations at once: their decode
steps are taken together, rows joining and leaving at token boundaries. The Hugging Face comparison
model stays one request at a time behind the same worker interface (`max_running=1`): its
transformers KV cache has no per-row positions to batch with, and it is a reference, not the
served model. `max_queue` bounds the requests waiting beyond the running ones either way.

`retrieve_many` is the engine's retrieval at a step: the rows closing a chunk are grouped by index
snapshot and k and searched with one `Retriever.search` call per group (one MiniLM encoder call and
one faiss/BM25 search), and each row's `NeighbourRecorder` records its own neighbours, so the
response reports what it retrieved as before. Retrieval callables the service did not make are
called one by one.
"""

from __future__ import annotations

import time

import numpy as np

from retro.batch_engine import BatchedRetroLanguageModel
from retro.generate import RetroLanguageModel
from retro.token_logprobs import RememberedRetrieval
from service.language_models import ServedModel
from service.metrics import ServiceMetrics
from service.retrieval import NeighbourRecorder
from service.settings import Settings
from service.workers import ModelWorker


def retrieve_many(requests: list[tuple[object, list[str]]]) -> list[np.ndarray]:
    """[(a row's retrieve, its texts)] -> each retrieve's answer, one search per (snapshot, k)."""
    answers: list[np.ndarray | None] = [None] * len(requests)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (retrieve, _texts) in enumerate(requests):
        recorder = retrieve.retrieve if isinstance(retrieve, RememberedRetrieval) else retrieve
        if isinstance(recorder, NeighbourRecorder):
            groups.setdefault((id(recorder.snapshot), recorder.k), []).append(i)
        else:
            answers[i] = np.asarray(retrieve(requests[i][1]))
    for members in groups.values():
        first = requests[members[0]][0]
        recorder = first.retrieve if isinstance(first, RememberedRetrieval) else first
        texts = [text for i in members for text in requests[i][1]]
        started = time.perf_counter()
        found = recorder.snapshot.retriever.search(texts, recorder.k)
        elapsed = time.perf_counter() - started
        recorder._on_latency(elapsed)  # one retrieval call, observed once
        start = 0
        for i in members:
            retrieve, own_texts = requests[i]
            own = found[start : start + len(own_texts)]
            start += len(own_texts)
            if isinstance(retrieve, RememberedRetrieval):
                rows = retrieve.retrieve.keep(own, elapsed)
                for text, row in zip(own_texts, rows, strict=True):
                    retrieve.rows[text] = row  # what its scoring replays
            else:
                rows = retrieve.keep(own, elapsed)
            answers[i] = rows
    return answers


def start_worker(model: ServedModel, settings: Settings, metrics: ServiceMetrics) -> ModelWorker:
    """The model's worker; a RETRO model's `lm` becomes its batched form (same network)."""
    batched = isinstance(model.lm, RetroLanguageModel) and settings.max_batch > 1
    on_close = None
    if batched:
        if not isinstance(model.lm, BatchedRetroLanguageModel):
            model.lm = BatchedRetroLanguageModel.of(
                model.lm,
                retrieve_many=retrieve_many,
                on_step=metrics.batch_size.labels(model.id).observe,
                name=model.id,
            )
        on_close = model.lm.close
    running = metrics.requests_running.labels(model.id)
    worker = ModelWorker(
        model.id,
        settings.max_queue,
        on_depth=metrics.queue_depth.labels(model.id).set,
        max_running=settings.max_batch if batched else 1,
        on_wait=metrics.queue_wait.labels(model.id).observe,
        on_close=on_close,
    )
    running.set_function(lambda: worker.running)
    return worker
