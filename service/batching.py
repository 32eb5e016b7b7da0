"""Serving a model with continuous batching: its worker, its batch engine, one search per step.

`start_worker(model, settings, metrics)` gives each served model its `ModelWorker`. A model with a
batched form (`retro.batch_engine.batched_form`: RETRO), with `max_batch` > 1, is swapped for it
(a `BatchedRetroLanguageModel` over the same network and tokenizer), and its worker runs up to
`max_batch` generations at once: their decode steps are taken together, rows joining and leaving
at token boundaries. A model without one (the Hugging Face comparison model) stays one request at
a time behind the same worker interface (`max_running=1`). `max_queue` bounds the requests
waiting beyond the running ones either way.

`retrieve_many` is the engine's retrieval at a step: the rows closing a chunk are grouped by index
snapshot and k and searched with one `Retriever.search` call per group (one MiniLM encoder call and
one faiss/BM25 search), and each row's `NeighbourRecorder` records its own neighbours, so the
response reports what it retrieved as before. Retrieval callables the service did not make are
called one by one.
"""

from __future__ import annotations

import time

import numpy as np

from retro.batch_engine import batched_form
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
                rows = retrieve.retrieve.keep(own, elapsed, own_texts)
                for text, row in zip(own_texts, rows, strict=True):
                    retrieve.rows[text] = row  # what its scoring replays
            else:
                rows = retrieve.keep(own, elapsed, own_texts)
            answers[i] = rows
    return answers


def start_worker(model: ServedModel, settings: Settings, metrics: ServiceMetrics) -> ModelWorker:
    """The model's worker; a model with a batched form (RETRO) is served in it (same network)."""
    batched = None
    if settings.max_batch > 1:
        batched = batched_form(
            model.lm,
            retrieve_many=retrieve_many,
            on_step=metrics.batch_size.labels(model.id).observe,
            name=model.id,
        )
    if batched is not None:
        model.lm = batched
    running = metrics.requests_running.labels(model.id)
    worker = ModelWorker(
        model.id,
        settings.max_queue,
        on_depth=metrics.queue_depth.labels(model.id).set,
        max_running=settings.max_batch if batched is not None else 1,
        on_wait=metrics.queue_wait.labels(model.id).observe,
        on_close=batched.close if batched is not None else None,
    )
    running.set_function(lambda: worker.running)
    return worker
