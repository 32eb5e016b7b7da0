"""No input produces a 500: a battery of bad requests, each with its expected 4xx and error shape."""

from __future__ import annotations

import pytest

from tests.service.conftest import make_settings

HUGE = "x" * 200_000  # over the test app's 100 kB body limit

COMPLETION_CASES = [
    # (json body, expected status, expected `param` or None)
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": None}, 422, "prompt"),
    ({}, 422, "prompt"),
    ({"prompt": [5, 10**6]}, 400, "prompt"),  # a token id outside the vocabulary
    ({"prompt": [[1], []]}, 422, "prompt"),  # an empty token list
    ({"prompt": []}, 422, "prompt"),
    ({"prompt": "x", "max_tokens": -1}, 422, "max_tokens"),
    ({"prompt": "x", "max_tokens": "many"}, 422, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**30}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 65}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": -0.5}, 422, "temperature"),
    ({"prompt": "x", "temperature": 3}, 422, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, 422, "temperature"),
    ({"prompt": "x", "top_p": 0}, 422, "top_p"),
    ({"prompt": "x", "top_p": 1.5}, 422, "top_p"),
    ({"prompt": "x", "top_k": -3}, 422, "top_k"),
    ({"prompt": "x", "seed": -1}, 422, "seed"),
    ({"prompt": "x", "seed": 2**70}, 422, "seed"),
    ({"prompt": "x", "stop": ""}, 422, "stop"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
    ({"prompt": "x", "stop": [1]}, 422, None),
    ({"prompt": "x", "n": 65}, 422, "n"),
    ({"prompt": "x", "n": 0}, 422, None),
    ({"prompt": "x", "logprobs": 21}, 422, "logprobs"),
    ({"prompt": "x", "echo": "loud"}, 422, "echo"),
    ({"prompt": "x", "stream": "maybe"}, 422, "stream"),
    ({"prompt": "x", "retrieval": {"k": 0}}, 422, "retrieval.k"),
    ({"prompt": "x", "retrieval": {"k": 17}}, 400, "retrieval.k"),
    ({"prompt": "x", "retrieval": {"bogus": 1}}, 422, None),
    ({"prompt": "x", "retrieval": {"first_copy_bias": -1}}, 422, "retrieval.first_copy_bias"),
    ({"prompt": "x", "retrieval": {"first_copy_bias": "high"}}, 422, "retrieval.first_copy_bias"),
    ({"prompt": "x", "retrieval": {"span_weight": -1}}, 422, "retrieval.span_weight"),
    ({"prompt": "x", "retrieval": {"span_follow": -0.5}}, 422, "retrieval.span_follow"),
    ({"prompt": "x", "retrieval": "yes"}, 422, None),
    ({"prompt": "x", "first_candidates": -1}, 422, "first_candidates"),
    ({"prompt": "x", "first_candidates": 21}, 422, "first_candidates"),
    ({"prompt": "x", "first_candidates": 2.5}, 422, "first_candidates"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "x", "model": 7}, 422, "model"),
    ({"prompt": "word " * 500, "max_tokens": 2}, 400, "prompt"),
    ({"prompt": HUGE}, 413, None),
]


@pytest.mark.parametrize(("body", "status", "param"), COMPLETION_CASES)
def test_bad_completion_requests(client, body, status, param):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param


def test_prompt_over_the_context_names_the_limit(client):
    error = client.post("/v1/completions", json={"prompt": "word " * 500}).json()["error"]
    assert "limit is 112" in error["message"]  # (128 - 1) // 16 * 16 with retrieval
    assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        " ",
        "\n\n",
        "<pad><pad>",
        "<eos>",
        "<|endoftext|>",
        "日本語のテキスト",
        "emoji 🤖🧠 and \u200b zero width",
        "\x00\x01 control",
        "a",
    ],
)
@pytest.mark.parametrize("model", ["tiny-retro", "tiny-gpt2"])
def test_odd_but_valid_prompts_are_answered(client, prompt, model):
    response = client.post("/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["choices"][0]["text"], str)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b"[]",
        b'"a string"',
        b"null",
        b'{"prompt": "x", "max_tokens": NaN}',
        b"\xff\xfe",
    ],
)
def test_malformed_bodies(client, raw):
    response = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert "error" in response.json()


def test_chunked_oversized_body_is_refused(client):
    def pieces():
        for _ in range(30):
            yield b"x" * 10_000

    response = client.post("/v1/completions", content=pieces(), headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/retrieve", {"query": ""}, 422),
        ("/v1/retrieve", {"query": "x", "k": 0}, 422),
        ("/v1/retrieve", {"query": "x", "k": 1000}, 400),
        ("/v1/retrieve", {"query": 3}, 422),
        ("/v1/retrieve", {"query": "x" * 20_000}, 422),
        ("/v1/compare", {"prompt": "x", "max_tokens": 1000}, 400),
        ("/v1/compare", {"prompt": ["x"]}, 422),
        ("/v1/compare", {"prompt": "x", "model": "tiny-retro"}, 422),
        ("/v1/documents", {"documents": []}, 422),
        ("/v1/documents", {"documents": [{"text": ""}]}, 422),
        ("/v1/documents", {"documents": [{"text": "   "}]}, 422),
        ("/v1/documents", {"documents": [{"text": "x", "id": "a\nb"}]}, 422),
        ("/v1/documents", {"documents": [{"text": "x", "id": "i" * 300}]}, 422),
        ("/v1/documents", {"documents": "text"}, 422),
        ("/v1/documents", {"documents": [{"text": "x"}] * 101}, 400),
        ("/v1/index/rebuild", {}, 422),
        ("/v1/index/rebuild", {"source": "../etc"}, 400),
        ("/v1/index/rebuild", {"source": "/etc"}, 403),
        ("/v1/index/rebuild", {"source": "missing-folder"}, 400),
        ("/v1/index/rebuild", {"source": "wiki-vital"}, 403),
    ],
)
def test_bad_requests_on_other_endpoints(client, path, body, status):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_unknown_routes_and_methods_are_json_errors(client):
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/completions").status_code == 405
    assert client.get("/v1/index/jobs/rebuild-unknown").status_code == 404


def test_full_queue_answers_429(make_client, settings):
    """With the running batch full (max_batch=1) and max_queue=1 request waiting, the next one is
    refused, not queued forever."""
    import threading

    test_client = make_client(make_settings(**{**settings.model_dump(), "max_queue": 1, "max_batch": 1}))
    state = test_client.app.state.service
    release = threading.Event()
    busy = [state.workers["tiny-retro"].submit(lambda: release.wait(10)) for _ in range(2)]
    try:
        response = test_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limit_error"
    finally:
        release.set()
        [job.result(timeout=10) for job in busy]
    assert test_client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
