"""vLLM's /tokenizer_info, /tokenize and /detokenize, used as lm-evaluation-harness's remote tokenizer."""

from __future__ import annotations

import jinja2.sandbox
import pytest

from retro.chat_template import ChatTurn, generation_prompt


def post(client, path, **body):
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_tokenizer_info_names_the_end_of_text_token(client, tokenizer):
    info = client.get("/tokenizer_info").json()
    context = client.get("/v1/models").json()["data"][0]["context_length"]
    assert info["eos_token"] == "<eos>" and info["eos_token_id"] == 1 and info["pad_token"] == "<pad>"
    assert info["bos_token"] is None and info["tokenizer_class"] == "Tokenizer"
    assert info["model_max_length"] == context == 128 and info["vocab_size"] == tokenizer.vocab_size
    assert info["model"] == "tiny-retro"


def test_tokenizer_info_of_the_comparison_model(client):
    info = client.get("/tokenizer_info", params={"model": "tiny-gpt2"}).json()
    assert info["eos_token"] == "<|endoftext|>" and info["model"] == "tiny-gpt2"
    assert (
        info["eos_token_id"]
        == post(client, "/tokenize", model="tiny-gpt2", prompt="<|endoftext|>")["tokens"][0]
    )
    assert client.get("/tokenizer_info", params={"model": "nope"}).status_code == 404


def test_tokenize_gives_the_models_prompt_tokens(client, tokenizer):
    body = post(client, "/tokenize", prompt="Zorbland is a small island")
    assert body["tokens"] == tokenizer.encode("Zorbland is a small island")
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 128
    assert body["token_strs"] is None
    messages = [{"role": "user", "content": "Zorbland is a small island"}]
    completion = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 1})
    assert completion.json()["usage"]["prompt_tokens"] == body["count"]


def test_an_empty_prompt_is_one_end_of_text_token_unless_special_tokens_are_off(client):
    assert post(client, "/tokenize", prompt="")["tokens"] == [1]
    assert post(client, "/tokenize", prompt="", add_special_tokens=False)["tokens"] == []


def test_what_lm_evaluation_harness_checks_and_derives(client):
    # check_remote_tokenizer_support: /tokenizer_info has eos_token, /tokenize answers a list.
    info = client.get("/tokenizer_info").json()
    assert "eos_token" in info
    assert isinstance(post(client, "/tokenize", prompt="test", add_special_tokens=False)["tokens"], list)
    # RemoteTokenizer.eos_token_id is the first id of tokenizing the eos_token's text.
    assert post(client, "/tokenize", prompt=info["eos_token"], add_special_tokens=False)["tokens"] == [1]
    # Its apply_chat_template renders tokenizer_info's chat_template with jinja2: the server's prompt.
    messages = [
        {"role": "system", "content": "Places."},
        {"role": "user", "content": "Where is Quibbletown?"},
    ]
    template = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(info["chat_template"])
    rendered = template.render(messages=messages, add_generation_prompt=True)
    assert rendered == generation_prompt([ChatTurn(m["role"], m["content"]) for m in messages]).text


def test_tokenize_messages_renders_them_as_chat_completions_do(client):
    messages = [{"role": "user", "content": "Where is Quibbletown?"}, {"role": "assistant", "content": "In"}]
    by_messages = post(client, "/tokenize", messages=messages)
    assert by_messages["tokens"] == post(client, "/tokenize", prompt="Where is Quibbletown? In")["tokens"]


def test_detokenize_keeps_special_tokens_so_that_tokens_round_trip(client, tokenizer):
    ids = [1, *tokenizer.encode("Mars is red.")]
    text = post(client, "/detokenize", tokens=ids)["prompt"]
    assert text == "<eos>Mars is red."
    assert post(client, "/tokenize", prompt=text, add_special_tokens=False)["tokens"] == ids
    assert post(client, "/detokenize", tokens=[])["prompt"] == ""
    last = tokenizer.vocab_size - 1  # the last id is decoded, the one after it is refused
    assert post(client, "/detokenize", tokens=[last])["prompt"] == tokenizer.decode([last])
    error = client.post("/detokenize", json={"tokens": [last + 1]}).json()["error"]
    assert error["message"] == f"token id {last + 1} is out of range: this tokenizer has {last + 1} tokens"


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/tokenize", {}, 422, "either a prompt or messages"),
        ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, 422, "either"),
        ("/tokenize", {"prompt": 5}, 422, "prompt"),
        ("/tokenize", {"messages": [{"role": "user", "content": " "}]}, 400, "no text"),
        ("/tokenize", {"prompt": "x", "return_token_strs": True}, 422, "return_token_strs"),
        ("/tokenize", {"prompt": "x", "model": "nope"}, 404, "does not exist"),
        ("/detokenize", {"tokens": [10**6]}, 400, "token id 1000000 is out of range"),
        ("/detokenize", {"tokens": [-1]}, 422, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, 422, "tokens"),
        ("/detokenize", {}, 422, "tokens"),
        ("/detokenize", {"tokens": [1], "model": "nope"}, 404, "does not exist"),
    ],
)
def test_bad_tokenizer_requests(client, path, body, status, words):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"]
