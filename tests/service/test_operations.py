"""GET /health while loading, after a failed load and when ready; /info; /metrics; /v1/compare; /."""

from __future__ import annotations

import threading

from service.state import ServiceState
from tests.service.conftest import make_settings


def test_health_is_503_while_loading_then_200(make_client, settings, monkeypatch):
    release = threading.Event()
    real_load = ServiceState._load

    def slow_load(self):
        release.wait(30)
        real_load(self)

    monkeypatch.setattr(ServiceState, "_load", slow_load)
    test_client = make_client(settings, ready=False)
    try:
        response = test_client.get("/health")
        assert response.status_code == 503 and response.json()["status"] == "loading"
        busy = test_client.post("/v1/completions", json={"prompt": "x"})
        assert busy.status_code == 503 and "loading" in busy.json()["error"]["message"]
        assert test_client.get("/").status_code == 200  # the page itself is static
    finally:
        release.set()
    from tests.service.conftest import wait_ready

    wait_ready(test_client)
    assert test_client.get("/health").json() == {"status": "ready"}


def test_failed_load_is_503_with_the_reason(make_client, tmp_path):
    test_client = make_client(make_settings(model=tmp_path / "missing"), ready=False)
    for _ in range(200):
        body = test_client.get("/health").json()
        if body["status"] != "loading":
            break
        threading.Event().wait(0.02)
    assert body["status"] == "failed" and "does not exist" in body["error"]["message"]
    assert test_client.get("/health").status_code == 503
    assert test_client.get("/info").status_code == 503


def test_info_names_model_index_and_device(client):
    info = client.get("/info").json()
    assert info["device"] == "cpu" and info["status"] == "ready"
    retro, compare = info["models"]
    assert retro["id"] == "tiny-retro" and retro["kind"] == "retro" and retro["chunk_size"] == 16
    assert compare["kind"] == "huggingface"
    # the generation settings a request gets unless it names its own (the tiny model's: all off)
    assert retro["defaults"] == {"k": 2, "query_tokens": 16, "first_copy_bias": 0.0, "first_candidates": 0}
    assert compare["defaults"] == {}
    assert retro["parameters"]["total"] > retro["parameters"]["non_embedding"] > 0
    assert info["index"]["version"].startswith("v") and info["index"]["chunks"] >= 6
    assert info["index"]["encoder"].endswith("all-MiniLM-L6-v2")


def test_metrics_are_prometheus_text_with_the_retro_prefix(client):
    client.post("/v1/completions", json={"prompt": "Mars", "max_tokens": 3})
    client.post("/v1/completions", json={"prompt": "x", "max_tokens": -1})
    text = client.get("/metrics").text
    for name in (
        "retro_requests_total",
        "retro_request_latency_seconds_bucket",
        "retro_tokens_generated_total",
        "retro_retrieval_latency_seconds_count",
        "retro_index_chunks",
        "retro_index_documents",
        "retro_queue_depth",
    ):
        assert name in text, name
    assert 'retro_requests_total{method="POST",route="/v1/completions",status="200"}' in text
    assert 'retro_requests_total{method="POST",route="/v1/completions",status="422"}' in text
    assert 'retro_tokens_generated_total{model="tiny-retro"}' in text
    # Every metric of the app's own registry carries the prefix (no default process collectors).
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(n.startswith("retro_") for n in names)


def test_compare_runs_both_models_with_the_same_settings(client):
    body = client.post(
        "/v1/compare", json={"prompt": "Zorbland is", "max_tokens": 6, "temperature": 0, "seed": 5}
    ).json()
    retro, other = body["results"]
    assert (retro["model"], other["model"]) == ("tiny-retro", "tiny-gpt2")
    for result in (retro, other):
        assert result["latency_s"] > 0 and result["tokens_per_s"] > 0
        assert 1 <= result["completion_tokens"] <= 6
        assert result["parameters"]["total"] > 0
    assert retro["retrieval"][0]["doc_id"] == "geo/zorbland" and other["retrieval"] == []
    assert body["sampling"]["temperature"] == 0 and body["sampling"]["max_tokens"] == 6


def test_compare_with_a_retro_baseline_checkpoint(make_client, settings, baseline_checkpoint):
    test_client = make_client(
        make_settings(**{**settings.model_dump(), "compare_model": baseline_checkpoint})
    )
    models = test_client.get("/v1/models").json()["data"]
    assert [(m["id"], m["kind"], m["uses_retrieval"]) for m in models] == [
        ("tiny-retro", "retro", True),
        ("tiny-baseline", "retro", False),
    ]
    body = test_client.post("/v1/compare", json={"prompt": "Mars", "max_tokens": 4}).json()
    assert body["results"][1]["retrieval"] == [] and body["results"][1]["completion_tokens"] >= 1
    assert (
        body["results"][1]["parameters"]["non_embedding"] > body["results"][0]["parameters"]["non_embedding"]
    )


def test_compare_without_a_comparison_model_is_400(make_client, settings):
    test_client = make_client(make_settings(**{**settings.model_dump(), "compare_model": None}))
    response = test_client.post("/v1/compare", json={"prompt": "Mars"})
    assert response.status_code == 400 and "--compare-model" in response.json()["error"]["message"]


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'id="prompt"' in response.text and "/v1/compare" in response.text
