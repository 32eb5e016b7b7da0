"""Service settings: one `Settings(BaseSettings)` read from `RETRO_*` environment variables.

This module owns every knob of the HTTP service (paths, limits, security) and checks them once at
start-up; it loads nothing. `retro serve` fills it from its options, tests build it directly.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETRO_", extra="ignore")

    model: Path | None = None  # the RETRO checkpoint folder (required to serve)
    model_name: str | None = None  # the id clients send as `model`; default: the checkpoint folder's name
    index: Path | None = None  # the index folder (CURRENT + versions); None serves without retrieval
    compare_model: Path | None = None  # a second retro checkpoint or a Hugging Face causal-LM folder
    compare_model_name: str | None = None
    # The retrieval-in-prompt comparator (a checkpoint with in_context=True, e.g. `retro train
    # --preset demo-rag`): served beside RETRO on the same index and in /v1/compare with role "rag".
    rag_model: Path | None = None
    rag_model_name: str | None = None
    device: str = "cpu"  # torch device for the models ("cpu", "cuda", "cuda:0")
    index_device: str = "auto"  # the chunk encoder's device
    # The chunk encoder's backend (index.encoder): "auto" runs MiniLM on ONNX Runtime fp32 on the CPU
    # (same vectors as torch, ~1.8x faster; docs/index_build.md) when onnxruntime is installed, torch
    # otherwise and on a GPU; "torch" turns ONNX off; "onnx-int8" is faster again but its vectors
    # differ slightly (live additions then put int8 rows into the index: the service warns).
    encoder_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    # Where the ONNX export of MiniLM is cached (None: $XDG_CACHE_HOME/retro/encoder).
    encoder_cache: Path | None = None
    # "hybrid": MiniLM and BM25 rankings fused (index.retriever), so a question naming a rare or
    # invented word finds the passage that holds it; "dense": MiniLM vectors only. Hybrid keeps a
    # BM25 index of every chunk's words in memory, built when the index opens (~2 s per 65k chunks).
    # "hybrid-titled": hybrid with BM25 over each chunk's document title and text, so
    # a passage's later chunks that say "it" are found by a question naming its title (test split:
    # passage retrieved 85.6% -> 88.5%, held-out-form questions 21.5% -> 23.1%; docs/results, reading3).
    # "hybrid-titled-doc": hybrid-titled whose first two neighbours are two windows of the best
    # document (index.retriever.top_document_first), for long passages whose answer is in another
    # chunk than the one naming the entity. "lexical-titled" (the default since 2026-12-06): BM25
    # over title and text alone, no MiniLM at query time: a question naming a rare name gets that
    # document's chunks, where the fusion can rank other entities' passages in the question's
    # wording above it (the demo, frozen test split: passage retrieved 88.5% -> 97.7%, held-out-form
    # questions 60.0% -> 69.6%, real-fact questions 94.6% -> 96.2%; bits per byte with retrieval on
    # held-out fact documents 0.621 -> 0.646: docs/results/cpu-demo-reading12-2026-12-06).
    retrieval: Literal["dense", "hybrid", "hybrid-titled", "hybrid-titled-doc", "lexical-titled"] = (
        "lexical-titled"
    )
    # CPU threads per torch op. Each model decodes in its own worker thread, and per-token ops of a
    # small model gain nothing from being split across cores: on the 2-core CPU, 1 instead of torch's
    # default 2 made /v1/compare with the demo models 1.7x faster (docs/service_load.md).
    # None keeps torch's default (one per core).
    torch_threads: int | None = Field(1, ge=1)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: SecretStr | None = None  # required by mutating endpoints when set; required off loopback

    # Limits: every one of them turns bad input into a 4xx instead of a slow or failed request.
    max_tokens_cap: int = Field(256, ge=1)  # the largest `max_tokens` accepted
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger request bodies get 413
    max_queue: int = Field(16, ge=1)  # requests waiting per model beyond the running ones; more get 429
    # Requests a RETRO model decodes together (continuous batching, service.batching); the
    # Hugging Face comparison model runs one at a time. 1: one request at a time for RETRO too.
    max_batch: int = Field(32, ge=1)
    max_retrieval_k: int = Field(16, ge=1)
    max_documents_per_request: int = Field(100, ge=1)

    # Rebuilds read only corpora under this root (or the named bundled sources listed below).
    corpus_root: Path | None = None
    rebuild_sources: list[str] = Field(default_factory=list)  # e.g. ["facts", "wiki-vital"]
    # After a rebuild has swapped in, older index versions beyond the newest N are deleted.
    keep_index_versions: int = Field(3, ge=1)

    def check_bind(self) -> None:
        """Refuses to listen beyond this machine without an API key."""
        if not is_loopback(self.host) and self.api_key is None:
            raise ValueError(
                f"refusing to listen on {self.host} without an API key: set RETRO_API_KEY (or --api-key), "
                "or bind to 127.0.0.1"
            )

    @property
    def retro_model_id(self) -> str:
        return self.model_name or (self.model.name if self.model else "retro")

    @property
    def compare_model_id(self) -> str | None:
        if self.compare_model is None:
            return None
        return self.compare_model_name or self.compare_model.name

    @property
    def rag_model_id(self) -> str | None:
        if self.rag_model is None:
            return None
        return self.rag_model_name or self.rag_model.name
