"""A client that disconnects from a stream stops its generation (a real uvicorn on loopback)."""

from __future__ import annotations

import time

import httpx

from service.app import create_app
from tests.service.conftest import live_server, make_settings


def test_disconnect_stops_the_generation(settings):
    app = create_app(make_settings(**{**settings.model_dump(), "max_tokens_cap": 64}))
    with live_server(app) as base:
        state = app.state.service
        model = state.retro.lm
        produced = []
        real_stream = model.stream

        def slow_stream(prompt, params, retrieve=None, query_start=0):
            for piece in real_stream(prompt, params, retrieve, query_start):
                produced.append(piece)
                time.sleep(0.05)  # ~3 s for 64 tokens: plenty of time to notice the disconnect
                yield piece

        model.stream = slow_stream
        request = {
            "prompt": "Mars",
            "max_tokens": 64,
            "temperature": 1.0,
            "seed": 1,
            "stream": True,
            "stop": None,
        }
        with (
            httpx.Client(base_url=base, timeout=30) as http,
            http.stream("POST", "/v1/completions", json=request) as r,
        ):
            assert r.status_code == 200
            lines = r.iter_lines()
            received = [line for _, line in zip(range(6), lines, strict=False)]
        assert any(line.startswith("data: ") for line in received)
        time.sleep(0.8)
        count = len(produced)
        time.sleep(0.5)
        assert len(produced) == count, "the generation kept running after the client left"
        assert count < 40
        metrics = httpx.get(f"{base}/metrics").text
        assert 'retro_generations_cancelled_total{model="tiny-retro"} 1.0' in metrics
        # The worker is free again: a new request is answered at once.
        model.stream = real_stream
        answer = httpx.post(f"{base}/v1/completions", json={"prompt": "Mars", "max_tokens": 2}, timeout=10)
        assert answer.status_code == 200


def test_a_queued_stream_whose_client_leaves_never_starts(settings):
    import threading

    # one running slot (max_batch=1), so that a job holding it makes the request wait in the queue
    app = create_app(make_settings(**{**settings.model_dump(), "max_batch": 1}))
    with live_server(app) as base:
        state = app.state.service
        model = state.retro.lm
        started = []
        real_stream = model.stream

        def recording_stream(prompt, params, retrieve=None, query_start=0):
            started.append(prompt)
            yield from real_stream(prompt, params, retrieve, query_start)

        model.stream = recording_stream
        release = threading.Event()
        busy = state.workers["tiny-retro"].submit(lambda: release.wait(30))
        request = {"prompt": "queued", "max_tokens": 8, "stream": True}
        try:
            httpx.post(f"{base}/v1/completions", json=request, timeout=0.5)
        except httpx.ReadTimeout:
            pass  # the client gives up while its request waits behind the busy worker
        else:
            raise AssertionError("the request should still have been queued")
        time.sleep(0.6)  # the server polls for the disconnect every 0.2 s
        release.set()
        busy.result(timeout=10)
        time.sleep(0.3)
        assert started == [], "a request whose client had left was generated anyway"
        assert state.workers["tiny-retro"].depth == 0
        model.stream = real_stream
        assert httpx.post(f"{base}/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
