"""POST /v1/completions: OpenAI response shape, retrieval block, SSE streaming, sampling controls."""

from __future__ import annotations

import json

import pytest

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
    assert set(neighbours[0]) == {"doc_id", "chunk_id", "score", "text", "for_chunk", "query"}
    assert neighbours[0]["query"] == "Zorbland is a small island"  # the one chunk is searched with its text
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


# --- every prompt form, n, logprobs, echo ------------------------------------------------------


def _greedy(client, prompt, **extra) -> dict:
    request = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "stop": None, **extra}
    response = client.post("/v1/completions", json=request)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_prompt_form_gets_one_choice_per_prompt(client):
    tokenizer = client.app.state.service.retro.lm.tokenizer
    alone = [_greedy(client, p)["choices"][0]["text"] for p in ("Mars is", "The Nile")]
    ids = [tokenizer.encode(p) for p in ("Mars is", "The Nile")]
    for prompt in (["Mars is", "The Nile"], ids):
        body = _greedy(client, prompt)
        assert [c["index"] for c in body["choices"]] == [0, 1]
        assert [c["text"] for c in body["choices"]] == alone
        assert [c["retrieval"][0]["for_chunk"] for c in body["choices"]] == [0, 0]
    one = _greedy(client, ids[1])  # a flat list of token ids is one prompt
    assert [c["text"] for c in one["choices"]] == alone[1:]
    assert one["usage"]["prompt_tokens"] == len(ids[1])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([5, 100_000], "not in this model's vocabulary"),
        ([[1], []], "at least one token"),
        ([], "at least one"),
    ],
)
def test_bad_token_prompts_are_refused(client, prompt, message):
    response = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})
    assert response.status_code in (400, 422), response.text
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "prompt"


def test_echo_with_logprobs_has_openais_legacy_shape(client):
    prompt = "Zorbland is a small island"
    body = _greedy(client, prompt, max_tokens=4, logprobs=2, echo=True)
    (choice,) = body["choices"]
    logprobs, usage = choice["logprobs"], body["usage"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n_tokens = usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(len(logprobs[key]) == n_tokens for key in logprobs)
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert all(isinstance(v, float) and v <= 0 for v in logprobs["token_logprobs"][1:])
    text = choice["text"]
    assert text.startswith(prompt) and len(text) > len(prompt)
    assert logprobs["text_offset"][0] == 0 and logprobs["text_offset"] == sorted(logprobs["text_offset"])
    assert "".join(logprobs["tokens"][: usage["prompt_tokens"]]) == prompt
    for token, offset in zip(logprobs["tokens"], logprobs["text_offset"], strict=True):
        assert text[offset:].startswith(token)
    for token, value, top in zip(
        logprobs["tokens"][1:], logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:], strict=True
    ):
        assert top[token] == value and 1 <= len(top) <= 3  # the 2 most likely, and always the chosen
    # Greedy: every generated token is the most likely one of the distribution it was sampled from.
    for value, top in zip(
        logprobs["token_logprobs"][-usage["completion_tokens"] :],
        logprobs["top_logprobs"][-usage["completion_tokens"] :],
        strict=True,
    ):
        assert value == pytest.approx(max(top.values()))


def test_max_tokens_zero_with_echo_scores_the_prompt_only(client):
    prompt = DOCUMENTS[0].text + " The violin has four strings."  # chunks whose neighbours count
    scored = _greedy(client, prompt, max_tokens=0, logprobs=1, echo=True)
    (choice,) = scored["choices"]
    assert choice["text"] == prompt and choice["finish_reason"] == "length"
    assert scored["usage"]["completion_tokens"] == 0
    assert len(choice["logprobs"]["tokens"]) == scored["usage"]["prompt_tokens"]
    # The same prompt with one generated token: its prompt part scores the same.
    longer = _greedy(client, prompt, max_tokens=1, logprobs=1, echo=True)["choices"][0]["logprobs"]
    assert longer["token_logprobs"][:-1] == pytest.approx(choice["logprobs"]["token_logprobs"])
    assert scored["usage"]["prompt_tokens"] > 16  # a whole chunk before the last token
    # Retrieval changes RETRO's distribution: the neighbours are part of the score.
    off = _greedy(client, prompt, max_tokens=0, logprobs=1, echo=True, retrieval={"enabled": False})
    assert off["choices"][0]["logprobs"]["token_logprobs"] != choice["logprobs"]["token_logprobs"]
    assert scored["retrieval"] and off["retrieval"] == []


def test_logprobs_without_echo_cover_the_completion_and_echo_alone_repeats_the_prompt(client):
    body = _greedy(client, "Bread dough", max_tokens=5, logprobs=0)
    (choice,) = body["choices"]
    assert len(choice["logprobs"]["tokens"]) == body["usage"]["completion_tokens"]
    assert choice["logprobs"]["text_offset"][0] == 0
    assert all(len(top) == 1 for top in choice["logprobs"]["top_logprobs"])  # logprobs=0: the chosen one
    echoed = _greedy(client, "Bread dough", max_tokens=5, echo=True)["choices"][0]
    assert echoed["text"] == "Bread dough" + choice["text"] and echoed["logprobs"] is None


def test_the_comparison_model_scores_too(client):
    body = _greedy(client, "Mars is red", model="tiny-gpt2", max_tokens=1, logprobs=1, echo=True)
    logprobs = body["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == body["usage"]["prompt_tokens"] + 1
    assert logprobs["token_logprobs"][0] is None and all(v < 0 for v in logprobs["token_logprobs"][1:])


def test_n_choices_use_consecutive_seeds(client):
    request = {"prompt": "In chess", "max_tokens": 8, "temperature": 1.0, "seed": 40, "n": 3}
    body = client.post("/v1/completions", json=request).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for j, choice in enumerate(body["choices"]):
        alone = client.post("/v1/completions", json={**request, "n": 1, "seed": 40 + j}).json()
        assert choice["text"] == alone["choices"][0]["text"]
    assert body["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"]  # the prompt counted once
    too_many = client.post("/v1/completions", json={**request, "prompt": ["a"] * 8, "n": 9})
    assert too_many.status_code == 422 and "64 choices" in too_many.json()["error"]["message"]


def test_stream_of_several_prompts_with_usage_and_logprobs(client):
    request = {"prompt": ["Mars is", "The Nile"], "max_tokens": 5, "temperature": 0, "stop": None}
    plain = client.post("/v1/completions", json=request).json()
    streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=streamed) as response:
        chunks = parse_sse(response.read().decode())
    texts = {0: "", 1: ""}
    for c in chunks[:-1]:
        texts[c["choices"][0]["index"]] += c["choices"][0]["text"]
    assert [texts[0], texts[1]] == [c["text"] for c in plain["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    finished = [c["choices"][0]["index"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finished == [0, 1]

    scored = {**request, "logprobs": 1, "echo": True}
    plain = client.post("/v1/completions", json=scored).json()
    with client.stream("POST", "/v1/completions", json={**scored, "stream": True}) as response:
        chunks = parse_sse(response.read().decode())
    with_text = [c["choices"][0] for c in chunks if c["choices"][0]["text"]]
    assert [c["text"] for c in with_text] == [c["text"] for c in plain["choices"]]
    assert [c["logprobs"] for c in with_text] == [c["logprobs"] for c in plain["choices"]]


def test_the_openai_client_reads_echoed_logprobs(client):
    import openai

    api = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)
    tokenizer = client.app.state.service.retro.lm.tokenizer
    completion = api.completions.create(
        model="tiny-retro", prompt=[tokenizer.encode("Zorbland is")], max_tokens=1, logprobs=1, echo=True,
        temperature=0,
    )  # fmt: skip
    logprobs = completion.choices[0].logprobs
    assert (
        logprobs.token_logprobs[0] is None
        and len(logprobs.tokens) == len(tokenizer.encode("Zorbland is")) + 1
    )
    assert completion.choices[0].text.startswith("Zorbland is")


def test_a_model_reading_longer_neighbours_is_served_windows_of_its_length(
    make_client, workdir, tokenizer, index_dir
):
    """A model fine-tuned to neighbours of 4 chunks (`retrieved_len` 64, chunks of 16) is served
    neighbours that show 4 chunks of their document; the default model's stay RETRO's 2."""
    import torch

    from retro.checkpoint import save_checkpoint
    from retro.config import RetroConfig
    from retro.model import Retro
    from tests.service.conftest import make_settings

    torch.manual_seed(0)
    config = RetroConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size).replace(retrieved_len=64)
    folder = save_checkpoint(workdir / "tiny-retro-r64", Retro(config), tokenizer)
    client = make_client(make_settings(model=folder, index=index_dir))
    snapshot = client.app.state.service.index.current
    assert snapshot.retriever.window == 4
    (found,) = snapshot.retriever.search(["Zorbland is a small island"], 2)
    assert found.tokens.shape == (2, 64)
    response = client.post("/v1/completions", json={"prompt": "Zorbland is a small island", "max_tokens": 4})
    assert response.status_code == 200, response.text
    assert response.json()["retrieval"][0]["doc_id"] == "geo/zorbland"


def test_the_default_model_is_served_retros_chunk_and_continuation(client):
    assert client.app.state.service.index.current.retriever.window == 2


def test_a_retrieval_off_answer_never_reads_an_earlier_requests_neighbours(client):
    """Requests share the batch engine's slots: a request with retrieval off (its prompt shorter than
    a chunk) answered with the neighbours an earlier request left in its slot, until 2026-12-07."""
    prompts = ["Mars is", "The Nile", "Zorbland is a small island", "The violin"]
    before = [_greedy(client, p, retrieval={"enabled": False})["choices"][0]["text"] for p in prompts]
    for p in prompts:
        _greedy(client, p)  # retrieval on: its neighbours fill a slot's memory
    after = [_greedy(client, p, retrieval={"enabled": False})["choices"][0]["text"] for p in prompts]
    assert after == before


def test_a_requests_first_candidates_reach_the_greedy_first_token(client):
    """`first_candidates` (default: the model's own, 0 for this tiny model) weighs the N likeliest
    first tokens by one token of lookahead: 0 is the default's text, 5 another for some prompt; the
    comparison model (Hugging Face) answers the same with or without it."""
    prompts = ["Mars is", "The Nile", "Zorbland is a small island", "The violin", "Paris", "The river"]
    default = [_greedy(client, p)["choices"][0]["text"] for p in prompts]
    zero = [_greedy(client, p, first_candidates=0)["choices"][0]["text"] for p in prompts]
    five = [_greedy(client, p, first_candidates=5)["choices"][0]["text"] for p in prompts]
    assert zero == default
    assert five != default
    baseline = {"model": "tiny-gpt2", "prompt": "Mars is"}
    assert (
        _greedy(client, **baseline)["choices"] == _greedy(client, **baseline, first_candidates=5)["choices"]
    )


def test_a_requests_first_copy_bias_reaches_the_first_token(client):
    """`retrieval.first_copy_bias` (nats; default: the model's own, 0 for this tiny model) changes how
    the answer's first token is drawn: 0 is the default's text, a large bias another for some prompt;
    the comparison model, which has no copy head, answers the same with or without it."""
    prompts = ["Mars is", "The Nile", "Zorbland is a small island", "The violin"]
    default = [_greedy(client, p)["choices"][0]["text"] for p in prompts]
    zero = [_greedy(client, p, retrieval={"first_copy_bias": 0})["choices"][0]["text"] for p in prompts]
    large = [_greedy(client, p, retrieval={"first_copy_bias": 60})["choices"][0]["text"] for p in prompts]
    assert zero == default
    assert large != default
    baseline = {"model": "tiny-gpt2", "prompt": "Mars is"}
    assert (
        _greedy(client, **baseline)["choices"]
        == _greedy(client, **baseline, retrieval={"first_copy_bias": 60})["choices"]
    )
