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
        model = state.retro
        produced = []
        real_stream = model.stream

        def slow_stream(prompt, params, retrieve=None):
            for piece in real_stream(prompt, params, retrieve):
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
