"""POST /v1/completions: OpenAI response shape, retrieval block, SSE streaming, sampling controls."""

from __future__ import annotations

import json

from tests.service.conftest import DOCUMENTS


def parse_sse(text: str) -> list:
    """data: lines -> parsed JSON chunks; the stream must end with data: [DONE]."""
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


def test_plain_completion_has_openai_shape_and_neighbours(client):
    response = client.post(
        "/v1/completions",
        json={
            "model": "tiny-retro",
            "prompt": "Zorbland is a small island",
            "max_tokens": 20,
            "temperature": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "tiny-retro" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length") and isinstance(choice["text"], str)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 20
    neighbours = body["retrieval"]
    assert neighbours, "a RETRO model with an index must report the neighbours it used"
    assert set(neighbours[0]) == {"doc_id", "chunk_id", "score", "text", "for_chunk"}
    # The prompt's only chunk is chunk 0; its best neighbour is the Zorbland document.
    first_chunk = [n for n in neighbours if n["for_chunk"] == 0]
    assert len(first_chunk) == 2  # the tiny preset's k
    assert first_chunk[0]["doc_id"] == "geo/zorbland"
    assert first_chunk[0]["score"] >= first_chunk[1]["score"]
    known = {d.doc_id for d in DOCUMENTS}
    assert all(
        n["doc_id"] in known or n["doc_id"].startswith("api-") or "/" in n["doc_id"] for n in neighbours
    )


def test_chunk_boundaries_during_generation_retrieve_again(client):
    # 16-token chunks: 40 new tokens after a short prompt cross at least two chunk boundaries.
    body = client.post(
        "/v1/completions", json={"prompt": "Mars", "max_tokens": 40, "temperature": 0, "stop": None}
    ).json()
    assert body["usage"]["completion_tokens"] == 40, "greedy from this seed-0 model never ends early"
    assert sorted({n["for_chunk"] for n in body["retrieval"]}) == [0, 1, 2]


def test_retrieval_can_be_switched_off(client):
    body = client.post(
        "/v1/completions", json={"prompt": "Mars", "max_tokens": 5, "retrieval": {"enabled": False}}
    ).json()
    assert body["retrieval"] == []


def test_k_is_honoured(client):
    body = client.post(
        "/v1/completions", json={"prompt": "Mars", "max_tokens": 3, "retrieval": {"k": 3}}
    ).json()
    assert len([n for n in body["retrieval"] if n["for_chunk"] == 0]) == 3


def test_same_seed_same_text_and_greedy_is_deterministic(client):
    request = {"prompt": "The violin", "max_tokens": 12, "temperature": 1.0, "seed": 1234}
    a = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    b = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    assert a == b
    greedy = {"prompt": "The violin", "max_tokens": 12, "temperature": 0}
    assert (
        client.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
        == client.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
    )


def test_stop_string_cuts_the_text(client):
    request = {"prompt": "The violin", "max_tokens": 30, "temperature": 0, "seed": 0}
    full = client.post("/v1/completions", json=request).json()["choices"][0]["text"]
    assert len(full) >= 4
    stop = full[2:4]
    stopped = client.post("/v1/completions", json={**request, "stop": [stop]}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stop not in stopped["text"] and full.startswith(stopped["text"])


def test_list_prompt_with_one_string_is_accepted(client):
    response = client.post("/v1/completions", json={"prompt": ["Mars"], "max_tokens": 2})
    assert response.status_code == 200


def test_comparison_model_answers_completions_without_retrieval(client):
    body = client.post(
        "/v1/completions", json={"model": "tiny-gpt2", "prompt": "Mars", "max_tokens": 5}
    ).json()
    assert body["model"] == "tiny-gpt2" and body["retrieval"] == []
    assert body["usage"]["completion_tokens"] >= 1


def test_stream_sends_retrieval_first_then_text_then_done(client):
    request = {"prompt": "Zorbland is", "max_tokens": 20, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = parse_sse(response.read().decode())
    assert chunks[0]["choices"][0]["text"] == "" and chunks[0]["retrieval"]
    assert chunks[0]["retrieval"][0]["doc_id"] == "geo/zorbland"
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    plain = client.post("/v1/completions", json={**request, "stream": False}).json()
    assert streamed == plain["choices"][0]["text"]


def test_stream_errors_before_the_first_byte_are_json(client):
    response = client.post("/v1/completions", json={"prompt": "word " * 400, "max_tokens": 2, "stream": True})
    assert response.status_code == 400
    assert "limit" in response.json()["error"]["message"]


def test_concurrent_requests_are_queued_not_interleaved(client):
    """Eight threads at once: each answer equals the one the same request gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    requests = [
        {"prompt": prompt, "max_tokens": 10, "temperature": 0.9, "seed": seed}
        for prompt, seed in [("Mars is", 1), ("The Nile", 2), ("Bread dough", 3), ("In chess", 4)] * 2
    ]
    alone = [client.post("/v1/completions", json=r).json()["choices"][0]["text"] for r in requests[:4]]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: client.post("/v1/completions", json=r), requests))
    assert [r.status_code for r in together] == [200] * 8
    assert [r.json()["choices"][0]["text"] for r in together] == alone * 2
