"""The official `openai` client works against the server unchanged: plain and streaming."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture()
def openai_client(client):
    # TestClient is an httpx.Client that talks to the ASGI app in-process.
    return openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)


def test_models_list(openai_client):
    ids = [m.id for m in openai_client.models.list()]
    assert ids == ["tiny-retro", "tiny-gpt2"]


def test_plain_completion(openai_client):
    completion = openai_client.completions.create(
        model="tiny-retro", prompt="Zorbland is", max_tokens=8, temperature=0, seed=3
    )
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens >= 1
    # Our extension rides along as an extra field.
    assert completion.model_extra["retrieval"][0]["doc_id"] == "geo/zorbland"


def test_streaming_completion(openai_client):
    stream = openai_client.completions.create(
        model="tiny-retro", prompt="Zorbland is", max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].model_extra["retrieval"]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].text for c in chunks)
    plain = openai_client.completions.create(
        model="tiny-retro", prompt="Zorbland is", max_tokens=10, temperature=0
    )
    assert text == plain.choices[0].text


def test_errors_surface_as_openai_exceptions(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client.completions.create(model="tiny-retro", prompt="x", max_tokens=10_000)
    assert "cap of 64" in str(raised.value)
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.completions.create(model="tiny-retro", prompt="x", max_tokens=2, logprobs=21)


def test_streaming_with_usage(openai_client):
    stream = openai_client.completions.create(
        model="tiny-gpt2", prompt="Mars", max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens >= 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
