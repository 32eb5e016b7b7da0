"""POST /v1/embeddings: the serving index's MiniLM, OpenAI's shape, float and base64, usage, errors."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from tests.service.conftest import make_settings

ENCODER = "sentence-transformers/all-MiniLM-L6-v2"


def embed(client, **body):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_one_string_gives_the_index_encoders_vector(client, encoder):
    body = embed(client, input="Zorbland is a small island country.", model=ENCODER)
    assert body["object"] == "list" and body["model"] == ENCODER
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    vector = np.array(item["embedding"], dtype=np.float32)
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    expected = encoder.encode(["Zorbland is a small island country."])[0]
    assert np.allclose(vector, expected, atol=1e-6)


def test_a_list_keeps_its_order_and_counts_wordpiece_tokens(client, encoder):
    texts = ["hello world", "The violin has four strings.", "hello world"]
    body = embed(client, input=texts)  # model left out: the served encoder
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert np.allclose(vectors, encoder.encode(texts), atol=1e-6)
    assert np.allclose(vectors[0], vectors[2])
    # "[CLS] hello world [SEP]" is 4 WordPiece tokens; a request counts the tokens of all its inputs.
    single = embed(client, input="hello world")["usage"]
    assert single == {"prompt_tokens": 4, "total_tokens": 4}
    violin = int(encoder.tokenize(["The violin has four strings."])["attention_mask"].sum())
    assert body["usage"]["prompt_tokens"] == 4 + violin + 4


def test_base64_is_little_endian_float32(client):
    floats = embed(client, input="Mars is red.", encoding_format="float")["data"][0]["embedding"]
    encoded = embed(client, input="Mars is red.", encoding_format="base64")["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    assert decoded.shape == (384,) and np.array_equal(decoded, np.array(floats, dtype=np.float32))


def test_the_short_model_name_and_its_dimension_are_accepted(client):
    body = embed(client, input="x", model="all-MiniLM-L6-v2", dimensions=384)
    assert body["model"] == ENCODER and len(body["data"][0]["embedding"]) == 384


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"input": [1, 2, 3]}, 400, "token-id input is not supported"),
        ({"input": [[1, 2], [3]]}, 400, "token-id input is not supported"),
        ({"input": ""}, 400, "must not be empty"),
        ({"input": []}, 400, "must not be empty"),
        ({"input": ["a", ""]}, 400, "must not be empty"),
        ({"input": ["x"] * 2049}, 400, "at most 2048 inputs"),
        (
            {"input": "x", "model": "text-embedding-3-small"},
            404,
            "embeds with sentence-transformers/all-MiniLM",
        ),
        ({"input": "x", "dimensions": 128}, 400, "gives 384 only"),
        ({"input": "x", "encoding_format": "int8"}, 422, "encoding_format"),
        ({"input": 5}, 422, "input"),
        ({"input": ["a", 1]}, 422, "input"),
        ({}, 422, "input"),
    ],
)
def test_bad_embedding_requests(client, body, status, words):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"]


def test_without_an_index_there_is_no_encoder(make_client, retro_checkpoint):
    no_index = make_client(make_settings(model=retro_checkpoint))
    response = no_index.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 400 and "without an index" in response.json()["error"]["message"]


def test_openai_client_embeddings(client, encoder):
    api = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)
    # The client asks for base64 unless told otherwise, and decodes it itself.
    default = api.embeddings.create(model=ENCODER, input=["Mars is red.", "Bread needs flour."])
    floats = api.embeddings.create(model=ENCODER, input="Mars is red.", encoding_format="float")
    assert [d.index for d in default.data] == [0, 1] and default.model == ENCODER
    assert np.allclose(default.data[0].embedding, floats.data[0].embedding, atol=1e-7)
    assert np.allclose(default.data[1].embedding, encoder.encode(["Bread needs flour."])[0], atol=1e-6)
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
