"""The retrieval-in-prompt comparator served as a third model: listed with role "rag", in
/v1/compare after RETRO and the comparison model, its passages in the result's `retrieval`,
batched like RETRO, and refused at load when it is not an in-context checkpoint of RETRO's
tokenizer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from retro.checkpoint import save_checkpoint
from retro.config import RetroConfig
from retro.model import Retro
from tests.service.conftest import make_settings
from tests.service.test_browser import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (its fixture)


@pytest.fixture(scope="module")
def rag_checkpoint(workdir, tokenizer) -> Path:
    import torch

    torch.manual_seed(3)
    model = Retro(RetroConfig.from_preset("tiny-rag", vocab_size=tokenizer.vocab_size))
    return save_checkpoint(workdir / "tiny-rag", model, tokenizer)


def failure(test_client) -> str:
    for _ in range(400):
        body = test_client.get("/health").json()
        if body["status"] != "loading":
            return body["error"]["message"]
        time.sleep(0.05)
    raise AssertionError("the service did not finish loading")


def test_compare_returns_retro_the_comparison_model_and_the_rag_model(make_client, settings, rag_checkpoint):
    test_client = make_client(make_settings(**{**settings.model_dump(), "rag_model": rag_checkpoint}))
    models = test_client.get("/v1/models").json()["data"]
    assert [(m["id"], m["role"], m["uses_retrieval"]) for m in models] == [
        ("tiny-retro", "retro", True),
        ("tiny-gpt2", "comparison", False),
        ("tiny-rag", "rag", True),
    ]
    body = test_client.post(
        "/v1/compare", json={"prompt": "Zorbland is", "max_tokens": 4, "temperature": 0, "seed": 5}
    ).json()
    assert [(r["model"], r["role"]) for r in body["results"]] == [
        ("tiny-retro", "retro"),
        ("tiny-gpt2", "comparison"),
        ("tiny-rag", "rag"),
    ]
    rag = body["results"][2]
    assert 1 <= rag["completion_tokens"] <= 4 and rag["latency_s"] > 0 and rag["parameters"]["total"] > 0
    # the passages in its prompt: the top k for the prompt, found in one search
    assert [n["for_chunk"] for n in rag["retrieval"]] == [0, 0]
    assert rag["retrieval"][0]["doc_id"] == "geo/zorbland" and "Quibbletown" in rag["retrieval"][0]["text"]
    info = {m["id"]: m for m in test_client.get("/info").json()["models"]}
    assert info["tiny-rag"]["role"] == "rag" and info["tiny-rag"]["max_batch"] == settings.max_batch


def test_compare_with_the_rag_model_alone_returns_two(make_client, settings, rag_checkpoint):
    test_client = make_client(
        make_settings(**{**settings.model_dump(), "compare_model": None, "rag_model": rag_checkpoint})
    )
    body = test_client.post(
        "/v1/compare", json={"prompt": "Mars", "max_tokens": 3, "retrieval": {"k": 1}}
    ).json()
    assert [r["role"] for r in body["results"]] == ["retro", "rag"]
    completion = test_client.post(
        "/v1/completions",
        json={"model": "tiny-rag", "prompt": "Mars", "max_tokens": 3, "retrieval": {"k": 1}, "logprobs": 1},
    ).json()
    assert len(completion["retrieval"]) == 1 and completion["retrieval"][0]["for_chunk"] == 0
    assert len(completion["choices"][0]["logprobs"]["tokens"]) == completion["usage"]["completion_tokens"]
    off = test_client.post(
        "/v1/completions",
        json={"model": "tiny-rag", "prompt": "Mars", "max_tokens": 2, "retrieval": {"enabled": False}},
    ).json()
    assert off["retrieval"] == []


def test_a_rag_model_must_be_an_in_context_checkpoint_of_retros_tokenizer(
    make_client, settings, baseline_checkpoint, workdir
):
    from retro.tokenizer import Tokenizer

    plain = make_client(
        make_settings(**{**settings.model_dump(), "rag_model": baseline_checkpoint}), ready=False
    )
    assert "not a retrieval-in-prompt checkpoint" in failure(plain)
    other = Tokenizer.train(["Some other words entirely, in another tokenizer."] * 8, vocab_size=300)
    model = Retro(RetroConfig.from_preset("tiny-rag", vocab_size=other.vocab_size))
    folder = save_checkpoint(workdir / "tiny-rag-other-tokenizer", model, other)
    foreign = make_client(make_settings(**{**settings.model_dump(), "rag_model": folder}), ready=False)
    assert "has another tokenizer" in failure(foreign)


def test_serve_takes_the_rag_model_from_its_option_or_the_environment(
    tmp_path, retro_checkpoint, monkeypatch
):
    from typer.testing import CliRunner

    from service.cli import app
    from service.settings import Settings

    for name in ("RETRO_API_KEY", "RETRO_HOST", "RETRO_MODEL", "RETRO_INDEX", "RETRO_RAG_MODEL"):
        monkeypatch.delenv(name, raising=False)
    args = ["serve", "--model", str(retro_checkpoint), "--rag-model", str(tmp_path / "nope")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "rag model folder" in " ".join(result.output.split())
    monkeypatch.setenv("RETRO_RAG_MODEL", str(tmp_path))
    monkeypatch.setenv("RETRO_RAG_MODEL_NAME", "demo-rag")
    settings = Settings()
    assert settings.rag_model == tmp_path and settings.rag_model_id == "demo-rag"


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="needs chromium and chromium-driver")
def test_the_page_shows_a_third_column_with_the_rag_models_answer_and_passages(
    browser,  # noqa: F811 (the fixture imported above)
    settings,
    rag_checkpoint,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from service.app import create_app
    from tests.service.conftest import live_server

    app = create_app(make_settings(**{**settings.model_dump(), "rag_model": rag_checkpoint}))
    with live_server(app) as base:
        browser.get(base + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: "tiny-rag" in d.find_element(By.ID, "served").text)
        assert browser.find_element(By.ID, "rag-card").is_displayed()
        assert browser.find_element(By.ID, "rag-name").text == "tiny-rag (retrieval in prompt)"
        browser.find_element(By.ID, "prompt").send_keys("Zorbland is a small island")
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.ID, "rag-timing").text != "")
        assert browser.find_element(By.ID, "error").text == ""
        assert "tokens/s" in browser.find_element(By.ID, "compare-timing").text
        passages = browser.find_elements(By.CSS_SELECTOR, "#rag-passages li")
        assert len(passages) == 2 and "geo/zorbland" in passages[0].text
        assert "geo/zorbland" in browser.find_element(By.ID, "passages").text  # RETRO's, as before
