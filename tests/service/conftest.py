"""Fixtures for the service tests: a tiny RETRO checkpoint, a tiny baseline, a tiny random GPT-2,
a tiny index built with the real MiniLM (loaded once per session), and a running app.

Everything is built in a session temp folder in a few seconds; tests that change the index
(additions, rebuilds) use their own copy of it (`fresh_index`) or unique document ids.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from index.corpus import Document
from retro.checkpoint import save_checkpoint
from retro.config import RetroConfig
from retro.model import Retro
from retro.tokenizer import Tokenizer
from service.app import create_app
from service.settings import Settings
from tests.index.conftest import TOPIC_DOCUMENTS
from tests.tiny_gpt2 import save_tiny_gpt2

# Zorbland (a fact only the index knows) and five of the index tests' distinct-topic documents.
DOCUMENTS = [
    Document(
        "geo/zorbland", "Zorbland is a small island country. Its capital is Quibbletown, a port city.", "test"
    ),
    *[
        d
        for d in TOPIC_DOCUMENTS
        if d.doc_id in {"space/mars", "food/bread", "music/violin", "sport/chess", "geo/nile"}
    ],
]
API_KEY = "test-key-123"


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200:
            return
        if response.json().get("status") == "failed":
            raise AssertionError(f"service failed to load: {response.json()}")
        time.sleep(0.05)
    raise AssertionError("service did not become ready")


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    texts = [d.text for d in DOCUMENTS] * 4 + ["The quick brown fox jumps over the lazy dog."] * 4
    return Tokenizer.train(texts, vocab_size=512)


@pytest.fixture(scope="session")
def retro_checkpoint(workdir, tokenizer) -> Path:
    import torch

    torch.manual_seed(0)
    model = Retro(RetroConfig.from_preset("tiny", vocab_size=tokenizer.vocab_size))
    return save_checkpoint(workdir / "tiny-retro", model, tokenizer, meta={"test": True})


@pytest.fixture(scope="session")
def baseline_checkpoint(workdir, tokenizer) -> Path:
    import torch

    torch.manual_seed(1)
    model = Retro(RetroConfig.from_preset("tiny-baseline", vocab_size=tokenizer.vocab_size))
    return save_checkpoint(workdir / "tiny-baseline", model, tokenizer)


@pytest.fixture(scope="session")
def hf_model_dir(workdir) -> Path:
    """A tiny random GPT-2 and a byte-level BPE tokenizer trained here: no download anywhere."""
    texts = [d.text for d in DOCUMENTS] * 4
    return save_tiny_gpt2(
        workdir / "tiny-gpt2", texts, vocab_size=400, n_layer=2, n_embd=32, n_positions=128, seed=2
    )


@pytest.fixture(scope="session")
def encoder():
    from service.retrieval import shared_encoder

    return shared_encoder("cpu")


@pytest.fixture(scope="session")
def index_dir(workdir, tokenizer, encoder) -> Path:
    from index.build import build_index

    folder = workdir / "index"
    build_index(DOCUMENTS, folder, tokenizer, encoder, chunk_size=16)
    return folder


@pytest.fixture(scope="session")
def corpus_root(workdir) -> Path:
    """An allowed corpus root holding one folder of .txt files for rebuilds."""
    root = workdir / "corpora"
    (root / "new").mkdir(parents=True)
    for i, text in enumerate(
        [
            "Glimmerfen is a marsh town whose bell tower is made of green glass.",
            "The Vantor river freezes every winter and is crossed on skates.",
            "Pelnic cheese is aged in caves for nine months.",
        ]
    ):
        (root / "new" / f"doc{i}.txt").write_text(text, encoding="utf-8")
    return root


@pytest.fixture()
def fresh_index(index_dir, tmp_path) -> Path:
    """A private copy of the index for tests that change it."""
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return copy


def make_settings(**overrides) -> Settings:
    # _env_file=None and explicit values: the developer's RETRO_* variables must not leak in.
    base = dict(device="cpu", index_device="cpu", max_tokens_cap=64, max_queue=8, max_body_bytes=100_000)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def settings(retro_checkpoint, hf_model_dir, index_dir, corpus_root) -> Settings:
    return make_settings(
        model=retro_checkpoint, index=index_dir, compare_model=hf_model_dir, corpus_root=corpus_root
    )


@pytest.fixture(scope="session")
def client(settings):
    app = create_app(settings)
    with TestClient(app) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture()
def make_client():
    """Starts extra apps (with their lifespan) for tests that need other settings; closes them after."""
    opened = []

    def start(settings: Settings, ready: bool = True) -> TestClient:
        test_client = TestClient(create_app(settings))
        test_client.__enter__()
        opened.append(test_client)
        if ready:
            wait_ready(test_client)
        return test_client

    yield start
    for test_client in opened:
        test_client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app):
    """A real uvicorn serving `app` on a free loopback port; yields the base URL once ready."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the live server did not become ready")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
