"""Which backend the chunk encoder's "auto" runs on this CPU: timed once per machine, then cached.

ONNX Runtime's MiniLM gave 1.26x torch's chunks/s on one 2-core AMD EPYC VM and 0.93x on an idle
2-core Intel Xeon with avx512_vnni (docs/index_build.md): no fixed rule picks the faster one. So
the first "auto" encoder on a machine times both on `PROBE_TEXTS` (64 texts of ~50 words, the
size of a chunk's text; a second or two) and keeps ONNX only if it is `MARGIN` faster; ties keep
torch, the reference path. The record is a JSON file in the ONNX export cache
(`auto-backend-<machine key>.json`, both timings and what they were measured on); the key is the
CPU model, its core count and the two runtimes' versions, so a new machine or a new runtime times
again. Delete the file to time again; `$RETRO_ENCODER_BACKEND` (or `--encoder-backend`) names a
backend outright and skips all of this. A cache that cannot be written costs a probe per process,
nothing else. It knows nothing of faiss, the store or LM tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

MARGIN = 1.05  # ONNX must take under 1/1.05 of torch's time to be chosen
REPEATS = 3  # timed runs of each backend, alternating; the fastest of each counts
_WORDS = ("river", "stone", "market", "winter", "letter", "garden", "station", "copper", "mountain",
          "harbour", "council", "lantern", "orchard", "island", "engine", "valley", "archive", "meadow",
          "theatre", "bridge")  # fmt: skip
PROBE_TEXTS = [" ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(48)) + "." for i in range(64)]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import onnxruntime
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "torch_threads": torch.get_num_threads()}  # fmt: skip


def record_path(cache: Path, about: dict) -> Path:
    key = hashlib.sha1(json.dumps(about, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache) / f"auto-backend-{key}.json"


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(run_torch: Callable[[], object], run_onnx: Callable[[], object]) -> dict:
    """Both backends on the probe (one warm-up each, then `REPEATS` alternating timed runs)."""
    run_torch(), run_onnx()
    torch_s, onnx_s = [], []
    for _ in range(REPEATS):
        torch_s.append(_seconds(run_torch))
        onnx_s.append(_seconds(run_onnx))
    best_torch, best_onnx = min(torch_s), min(onnx_s)
    return {
        "backend": "onnx" if best_onnx * MARGIN < best_torch else "torch",
        "torch_s": round(best_torch, 4),
        "onnx_s": round(best_onnx, 4),
        "onnx_speedup": round(best_torch / best_onnx, 3) if best_onnx > 0 else None,
        "texts": len(PROBE_TEXTS),
        "margin": MARGIN,
    }


def choose(run_torch: Callable[[], object], run_onnx: Callable[[], object], cache: str | Path) -> dict:
    """The cached record for this machine, or a new measurement (written to the cache when it can
    be). The record's "backend" is "onnx" or "torch"; "cached" says whether it was read."""
    about = machine()
    path = record_path(Path(cache), about)
    try:
        record = json.loads(path.read_text())
        if record.get("backend") in ("onnx", "torch"):
            return {**record, "cached": True}
    except (OSError, ValueError):
        pass
    record = {**measure(run_torch, run_onnx), "machine": about,
              "measured": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    log.info("chunk encoder 'auto': ONNX %.2fx torch on this CPU -> %s (recorded in %s)",
             record["onnx_speedup"] or 0.0, record["backend"], path)  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)  # atomic: a reader sees the whole record or none
    except OSError as e:
        log.warning("could not record the encoder backend choice in %s: %s", path, e)
    return {**record, "cached": False}
