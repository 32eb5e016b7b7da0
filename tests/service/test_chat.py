"""POST /v1/chat/completions: OpenAI's chat shape over the plain-text template, streaming, errors.

The template's contract is checked against /v1/completions: a chat's reply is the completion of
the rendered conversation (greedy, so both are deterministic), its leading space stripped.
"""

from __future__ import annotations

import openai
import pytest

from tests.service.test_completions import parse_sse

QUESTION = "Zorbland is a small island"


def chat(client, messages, **fields):
    response = client.post("/v1/chat/completions", json={"messages": messages, "temperature": 0, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def complete(client, prompt, **fields):
    response = client.post("/v1/completions", json={"prompt": prompt, "temperature": 0, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_plain_chat_has_openai_shape_and_neighbours(client):
    body = chat(client, [{"role": "user", "content": QUESTION}], max_tokens=12)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-retro" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The retrieval query is the conversation's last chunk: the user's words find Zorbland.
    assert body["retrieval"][0]["doc_id"] == "geo/zorbland" and body["retrieval"][0]["for_chunk"] == 0


def test_one_question_is_answered_as_the_same_completion(client):
    reply = chat(client, [{"role": "user", "content": QUESTION}], max_tokens=12, seed=1)
    completion = complete(client, QUESTION, max_tokens=12, seed=1)
    assert reply["choices"][0]["message"]["content"] == completion["choices"][0]["text"].lstrip()
    assert reply["usage"] == completion["usage"]
    assert reply["retrieval"] == completion["retrieval"]


def test_a_conversation_is_rendered_as_its_turns_joined_by_spaces(client):
    messages = [
        {"role": "system", "content": "Facts about places."},
        {"role": "user", "content": [{"type": "text", "text": "Where is Quibbletown?"}]},
        {"role": "assistant", "content": "In Zorbland."},
        {"role": "developer", "content": ""},  # empty turns are left out; developer = system
        {"role": "user", "content": "  What is Zorbland?\n", "name": "ada"},
    ]
    reply = chat(client, messages, max_tokens=10)
    rendered = "Facts about places. Where is Quibbletown? In Zorbland. What is Zorbland?"
    completion = complete(client, rendered, max_tokens=10)
    assert reply["choices"][0]["message"]["content"] == completion["choices"][0]["text"].lstrip()
    assert reply["usage"]["prompt_tokens"] == completion["usage"]["prompt_tokens"]


def test_a_system_message_is_read_but_not_searched(client):
    """The question retrieves what it retrieves alone: the system message's words (here a
    distractor's) stay out of the query of the chunk the reply reads (`ChatPrompt.query_start`)."""
    system = "Mars is a planet with red dust and two moons."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    reply = chat(client, messages, max_tokens=1)
    alone = complete(client, QUESTION, max_tokens=1)
    chunk = 16  # the test index's and the tiny model's chunk size

    def last_prompt_chunk(body):
        last = -(-body["usage"]["prompt_tokens"] // chunk) - 1
        return [r for r in body["retrieval"] if r["for_chunk"] == last]

    def found(records):
        return [{k: v for k, v in r.items() if k not in ("for_chunk", "query")} for r in records]

    assert found(last_prompt_chunk(reply)) == found(last_prompt_chunk(alone)) and last_prompt_chunk(alone)
    # the response says what was searched: the question (after the joiner's space), not the system message
    assert {r["query"] for r in last_prompt_chunk(reply)} == {f" {QUESTION}"}
    assert last_prompt_chunk(reply)[0]["doc_id"] == "geo/zorbland"
    searched_whole = complete(client, f"{system} {QUESTION}", max_tokens=1)  # a completion is searched whole
    assert found(last_prompt_chunk(searched_whole)) != found(last_prompt_chunk(alone))


def test_a_final_assistant_message_is_continued(client):
    messages = [{"role": "user", "content": "Mars"}, {"role": "assistant", "content": "is the"}]
    reply = chat(client, messages, max_tokens=6)
    completion = complete(client, "Mars is the", max_tokens=6)
    assert reply["choices"][0]["message"]["content"] == completion["choices"][0]["text"]  # not stripped


def test_the_comparison_model_answers_the_same_template(client):
    messages = [{"role": "user", "content": "Mars"}]
    reply = chat(client, messages, model="tiny-gpt2", max_tokens=6)
    assert reply["model"] == "tiny-gpt2" and reply["retrieval"] == []
    completion = complete(client, "Mars", model="tiny-gpt2", max_tokens=6)
    assert reply["choices"][0]["message"]["content"] == completion["choices"][0]["text"].lstrip()


def test_max_completion_tokens_wins_over_max_tokens(client):
    # Greedy "Mars" on this seed-0 model never ends early (test_completions relies on it too).
    body = chat(
        client, [{"role": "user", "content": "Mars"}], max_tokens=2, max_completion_tokens=5, stop=None
    )
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == "length"


def test_streaming_chat_sends_role_then_content_then_done(client):
    messages = [{"role": "user", "content": QUESTION}]
    response = client.post(
        "/v1/chat/completions",
        json={"messages": messages, "temperature": 0, "max_tokens": 30, "stream": True,
              "stream_options": {"include_usage": True}},
    )  # fmt: skip
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    chunks = parse_sse(response.text)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    first, *pieces, last_piece, usage_chunk = chunks
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["retrieval"][0]["doc_id"] == "geo/zorbland"
    assert all("role" not in c["choices"][0]["delta"] for c in [*pieces, last_piece])
    assert all(c["choices"][0]["finish_reason"] is None for c in [first, *pieces])
    assert last_piece["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] >= 1
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in [*pieces, last_piece])
    plain = chat(client, messages, max_tokens=30)
    assert streamed == plain["choices"][0]["message"]["content"]
    assert usage_chunk["usage"] == plain["usage"]
    # 30 new tokens after a one-chunk prompt close a chunk: its neighbours ride on a content chunk.
    assert any(n["for_chunk"] == 1 for c in pieces + [last_piece] for n in c.get("retrieval", []))


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"messages": []}, 422, "messages"),
        ({}, 422, "messages"),
        ({"messages": "hi"}, 422, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 422, "messages.0.role"),
        ({"messages": [{"content": "x"}]}, 422, "messages.0.role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 422, None),
        ({"messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 422, None),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, 422, None),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 422, None),
        (
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
            422,
            None,
        ),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 65}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0}, 422, None),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, 422, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "model": "nope"}, 404, "model"),
        ({"messages": [{"role": "user", "content": "word " * 500}]}, 400, "messages"),
        ({"messages": [{"role": "user", "content": "word " * 500}], "stream": True}, 400, "messages"),
    ],
)
def test_bad_chat_requests(client, body, status, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param


def test_unsupported_options_say_what_is_unsupported(client):
    messages = [{"role": "user", "content": "x"}]
    for extra, words in [({"n": 3}, "n=3 is not supported"), ({"logprobs": True}, "logprobs"),
                         ({"tools": [{"type": "function"}]}, "tools are not supported")]:  # fmt: skip
        error = client.post("/v1/chat/completions", json={"messages": messages, **extra}).json()["error"]
        assert words in error["message"], error
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    error = client.post("/v1/chat/completions", json={"messages": image}).json()["error"]
    assert "only text content parts are supported" in error["message"]
    long = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 500}]}
    )
    assert long.json()["error"]["code"] == "context_length_exceeded"


# --- the official openai client ------------------------------------------------------------------
@pytest.fixture()
def openai_client(client):
    return openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)


def test_openai_client_chat(openai_client):
    completion = openai_client.chat.completions.create(
        model="tiny-retro", messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0
    )
    assert completion.object == "chat.completion"
    message = completion.choices[0].message
    assert message.role == "assistant" and isinstance(message.content, str)
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens >= 1
    assert completion.model_extra["retrieval"][0]["doc_id"] == "geo/zorbland"


def test_openai_client_chat_stream(openai_client):
    messages = [{"role": "system", "content": "Places."}, {"role": "user", "content": QUESTION}]
    stream = openai_client.chat.completions.create(
        model="tiny-retro", messages=messages, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = openai_client.chat.completions.create(
        model="tiny-retro", messages=messages, max_tokens=10, temperature=0
    )
    assert text == plain.choices[0].message.content


def test_openai_client_chat_errors(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.UnprocessableEntityError):
        openai_client.chat.completions.create(
            model="tiny-retro", messages=[{"role": "user", "content": "x"}], n=2
        )
