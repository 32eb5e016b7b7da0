"""Concurrent requests to the service are decoded together (service.batching, service.workers).

More clients than the waiting queue holds are all answered, each with what it gets alone; the
rows closing a chunk at a step are retrieved for in one search; batch size and queue wait are in
/metrics; the queue limit bounds waiting requests, not running ones; the Hugging Face comparison
model stays one request at a time behind the same worker interface.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from retro.batch_engine import BatchedRetroLanguageModel
from retro.token_logprobs import RememberedRetrieval
from service.app import create_app
from service.batching import retrieve_many
from service.retrieval import NeighbourRecorder
from service.workers import ModelWorker, QueueFullError
from tests.service.conftest import live_server, make_settings

PROMPTS = ["Zorbland", "The capital of Zorbland is", "Mars is a planet", "Bread is made of", "Chess"]


def completion(base: str, prompt: str, **extra) -> dict:
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, **extra}
    response = httpx.post(f"{base}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def neighbours(answer: dict) -> list[tuple]:
    return [
        (r["doc_id"], r["chunk_id"], r.get("for_chunk"), round(r["score"], 3)) for r in answer["retrieval"]
    ]


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_more_clients_than_the_queue_holds_are_all_answered_as_alone(settings):
    app = create_app(make_settings(**{**settings.model_dump(), "max_queue": 2, "max_batch": 16}))
    with live_server(app) as base:
        assert isinstance(app.state.service.retro.lm, BatchedRetroLanguageModel)
        alone = {p: completion(base, p) for p in PROMPTS}
        answers: list[dict | None] = [None] * 15
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(15)]

        def client(i: int) -> None:
            answers[i] = completion(base, prompts[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(15)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for prompt, answer in zip(prompts, answers, strict=True):
            assert answer is not None
            assert answer["choices"][0]["text"] == alone[prompt]["choices"][0]["text"]
            # the same neighbours (scores may move in the last digits: MiniLM encoded them in a batch)
            assert neighbours(answer) == neighbours(alone[prompt])
        metrics = httpx.get(f"{base}/metrics").text
    steps = metric(metrics, 'retro_batch_size_count{model="tiny-retro"}')
    rows = metric(metrics, 'retro_batch_size_sum{model="tiny-retro"}')
    assert steps > 0 and rows / steps > 1.5, (rows, steps)  # 20 clients' tokens, few steps
    assert metric(metrics, 'retro_queue_wait_seconds_count{model="tiny-retro"}') == 20
    assert 'retro_requests_running{model="tiny-retro"} 0.0' in metrics


class CountingRetriever:
    """A retriever that counts its searches and finds, for each text, two made-up chunks."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def search(self, texts, k):
        self.calls.append(list(texts))
        return [
            SimpleNamespace(
                tokens=np.full((k, 4), len(text), dtype=np.int64),
                chunk_ids=np.arange(k),
                doc_ids=[f"doc/{text}"] * k,
                scores=np.ones(k),
                texts=[text] * k,
            )
            for text in texts
        ]


def test_rows_closing_a_chunk_together_share_one_search():
    retriever = CountingRetriever()
    snapshot = SimpleNamespace(retriever=retriever)
    latencies = []
    a, b = NeighbourRecorder(snapshot, 2, latencies.append), NeighbourRecorder(snapshot, 2, latencies.append)
    c = NeighbourRecorder(snapshot, 3)  # another k: its own search
    remembered = RememberedRetrieval(b)
    answers = retrieve_many([(a, ["one"]), (remembered, ["three"]), (c, ["seven"])])
    assert retriever.calls == [["one", "three"], ["seven"]] and len(latencies) == 1
    assert [x.shape for x in answers] == [(1, 2, 4), (1, 2, 4), (1, 3, 4)]
    assert int(answers[1][0, 0, 0]) == len("three")
    assert [r["doc_id"] for r in a.records] == ["doc/one"] * 2 and a.records[0]["for_chunk"] == 0
    assert [r["doc_id"] for r in b.records] == ["doc/three"] * 2
    assert np.array_equal(remembered.replay(["three"]), answers[1])  # scoring replays, no new search
    assert len(retriever.calls) == 2


def test_the_queue_limit_bounds_waiting_jobs_not_running_ones():
    worker = ModelWorker("batched", max_queue=1, max_running=3)
    release, started = threading.Event(), []
    lock = threading.Lock()

    def job():
        with lock:
            started.append(1)
        return release.wait(10)

    try:
        futures = [worker.submit(job) for _ in range(4)]  # 3 running together, 1 waiting
        deadline = time.monotonic() + 5
        while len(started) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(started) == 3 and worker.running == 3 and worker.waiting == 1
        with pytest.raises(QueueFullError, match="1 requests waiting and 3 running .waiting limit 1"):
            worker.submit(job)
        release.set()
        assert all(f.result(10) for f in futures)
        assert worker.depth == 0
    finally:
        worker.close()


def test_the_comparison_model_stays_one_at_a_time(make_client, settings):
    test_client = make_client(settings)
    state = test_client.app.state.service
    retro, compare = state.workers[state.retro.id], state.workers[state.compare.id]
    listed = {m["id"]: m["max_batch"] for m in test_client.get("/info").json()["models"]}
    assert listed == {state.retro.id: settings.max_batch, state.compare.id: 1}
    assert retro.max_running == settings.max_batch > 1
    assert compare.max_running == 1
    assert not isinstance(state.compare.lm, BatchedRetroLanguageModel)


def test_max_batch_1_serves_one_request_at_a_time(make_client, settings):
    state = make_client(make_settings(**{**settings.model_dump(), "max_batch": 1})).app.state.service
    assert state.workers[state.retro.id].max_running == 1
    assert not isinstance(state.retro.lm, BatchedRetroLanguageModel)
