"""MiniLM on ONNX Runtime: the same vectors as torch, int8 close, chosen by "auto" on the CPU where
it was timed faster (once per machine, cached), a switch to turn it off, one offline export cached
atomically, and the backend in the manifest."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from index import backend_choice, onnx_encoder  # noqa: E402
from index.build import build_index  # noqa: E402
from index.embedding_reuse import ReusingEncoder  # noqa: E402
from index.encoder import BACKEND_ENV, ChunkEncoder, model_path, resolve_backend  # noqa: E402
from index.layout import MANIFEST, read_json, resolve_version_dir  # noqa: E402

TEXTS = [
    "Sea otters float on their backs.",
    "",
    "Mars has two moons. " * 40,  # past the 256-token limit
    "Émoji 🎉, ünïcödé and 中文 text.",
    "The violin has four strings tuned in perfect fifths.",
    "Julius Caesar crossed the Rubicon river in 49 BC, starting a civil war in Rome.",
]


def _dead_pid() -> int:
    """The id of a process that has exited (the owner of a crashed export's temp folder)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """One export cache for the module. A crash's leftover temp folder is planted first, and a
    live exporter's one."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    dead = cache / f"{onnx_encoder.TEMP_PREFIX}{_dead_pid()}-crashed"
    dead.mkdir()
    (dead / onnx_encoder.MODEL_FILE).write_bytes(b"\x08\x07half an export")
    live = cache / f"{onnx_encoder.TEMP_PREFIX}{os.getppid()}-running"  # another exporter, still alive
    live.mkdir()
    return cache


@contextlib.contextmanager
def hub_unreachable():
    """HF_HUB_OFFLINE=1 and every socket connect failing, for the duration of an export only."""
    saved, connect = os.environ.get("HF_HUB_OFFLINE"), socket.socket.connect

    def refuse(self, *args, **kwargs):
        raise OSError("network access attempted during the encoder export")

    os.environ["HF_HUB_OFFLINE"] = "1"
    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = connect
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


@pytest.fixture(scope="session")
def torch_encoder():
    return ChunkEncoder("cpu", backend="torch")


def plant_choice(cache, backend: str) -> None:
    """A timing record for this machine, as if "auto" had measured `backend` to be the faster."""
    path = backend_choice.record_path(cache, backend_choice.machine())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{"backend": "{backend}", "torch_s": 1.0, "onnx_s": 1.0}}')


@pytest.fixture(scope="session")
def auto_encoder(onnx_cache):
    plant_choice(onnx_cache, "onnx")  # whatever this machine measures, these tests read ONNX's vectors
    with hub_unreachable():  # the first load exports
        return ChunkEncoder("cpu", backend="auto", onnx_cache=onnx_cache)


@pytest.fixture(scope="session")
def int8_encoder(onnx_cache, auto_encoder):
    with hub_unreachable():
        return ChunkEncoder("cpu", backend="onnx-int8", onnx_cache=onnx_cache)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_auto_picks_onnx_on_the_cpu_with_torchs_vectors(auto_encoder, torch_encoder):
    assert auto_encoder.backend == "onnx" and torch_encoder.backend == "torch"
    ours = auto_encoder.encode(TEXTS, batch_size=4)
    reference = torch_encoder.encode(TEXTS, batch_size=4)
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    assert _cosines(ours, reference).min() >= 0.99999
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([auto_encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, ours, atol=1e-5)  # padding does not leak into the pool
    assert auto_encoder.encode([]).shape == (0, 384)


def test_auto_times_both_backends_once_per_machine_and_obeys_the_record(auto_encoder, onnx_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(onnx_cache, cache)  # the export, without re-exporting
    record = backend_choice.record_path(cache, backend_choice.machine())
    record.unlink()
    timed = ChunkEncoder("cpu", backend="auto", onnx_cache=cache)  # no record: it measures
    written = json.loads(record.read_text())
    assert written["backend"] == timed.backend and timed.auto_choice["cached"] is False
    assert written["torch_s"] > 0 and written["onnx_s"] > 0 and written["machine"]["cores"] >= 1
    faster = "onnx" if written["onnx_s"] * backend_choice.MARGIN < written["torch_s"] else "torch"
    assert timed.backend == faster
    for backend in ("torch", "onnx"):  # a record is read, not re-measured
        plant_choice(cache, backend)
        again = ChunkEncoder("cpu", backend="auto", onnx_cache=cache)
        assert again.backend == backend and again.auto_choice["cached"] is True
        np.testing.assert_allclose(again.encode(TEXTS[:3]), auto_encoder.encode(TEXTS[:3]), atol=1e-5)
    plant_choice(cache, "torch")
    assert ChunkEncoder("cpu", backend="onnx", onnx_cache=cache).backend == "onnx"  # named: no timing


def test_the_choice_keeps_onnx_only_when_it_is_clearly_faster(tmp_path, monkeypatch):
    import time

    def sleeper(seconds):
        return lambda: time.sleep(seconds)

    calls = []
    assert backend_choice.measure(sleeper(0.02), sleeper(0.002))["backend"] == "onnx"
    assert backend_choice.measure(sleeper(0.002), sleeper(0.02))["backend"] == "torch"
    assert backend_choice.measure(sleeper(0.01), sleeper(0.01))["backend"] == "torch"  # a tie keeps torch
    first = backend_choice.choose(sleeper(0.02), sleeper(0.002), tmp_path)
    assert first["backend"] == "onnx" and not first["cached"]

    def never():
        calls.append(1)
        raise AssertionError("a recorded choice is not timed again")

    second = backend_choice.choose(never, never, tmp_path)
    assert second["backend"] == "onnx" and second["cached"] and not calls
    monkeypatch.setattr(backend_choice, "machine", lambda: {"cpu": "another machine"})
    assert backend_choice.choose(sleeper(0.002), sleeper(0.02), tmp_path)["backend"] == "torch"
    read_only = tmp_path / "read-only"
    read_only.write_text("a file where the cache folder would be")
    assert (
        backend_choice.choose(sleeper(0.002), sleeper(0.02), read_only)["backend"] == "torch"
    )  # not written


def test_int8_is_close_to_fp32(int8_encoder, auto_encoder):
    assert int8_encoder.backend == "onnx-int8"
    cosines = _cosines(int8_encoder.encode(TEXTS), auto_encoder.encode(TEXTS))
    assert cosines.min() >= 0.97, cosines
    assert cosines.max() < 0.99999  # really the quantized model, not the fp32 one again


def test_the_switch_turns_onnx_off(monkeypatch):
    assert resolve_backend("torch", "cpu") == "torch"
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert resolve_backend(None, "cpu") == "torch"
    monkeypatch.delenv(BACKEND_ENV)
    assert resolve_backend(None, "cpu") == "onnx"
    assert resolve_backend("auto", "cuda") == "torch"  # ONNX Runtime here is a CPU build
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("onnx", "cuda")
    with pytest.raises(ValueError, match="one of"):
        resolve_backend("tensorrt", "cpu")


def test_without_onnxruntime_auto_falls_back_to_torch(monkeypatch):
    monkeypatch.setattr(onnx_encoder, "onnxruntime_available", lambda: False)
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="needs onnxruntime"):
        resolve_backend("onnx-int8", "cpu")


def test_a_failed_export_falls_back_to_torch_under_auto_only(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise OSError("read-only cache")

    monkeypatch.setattr(onnx_encoder, "ensure_export", broken)
    with pytest.raises(ValueError, match="read-only cache"):
        ChunkEncoder("cpu", backend="onnx", onnx_cache=tmp_path)
    assert ChunkEncoder("cpu", backend="auto", onnx_cache=tmp_path).backend == "torch"


def test_the_export_is_made_once_and_cached(auto_encoder, int8_encoder, onnx_cache):
    fp32 = onnx_encoder.export_path(model_path(), False, onnx_cache)
    int8 = onnx_encoder.export_path(model_path(), True, onnx_cache)
    # int8 MatMul weights; the embedding tables stay fp32 (47 of the 90 MB)
    assert fp32.is_file() and int8.is_file() and int8.stat().st_size < 0.7 * fp32.stat().st_size
    made, mtimes = onnx_encoder.exports_made, (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns)
    assert onnx_encoder.ensure_export(model_path(), False, onnx_cache) == fp32
    assert onnx_encoder.ensure_export(model_path(), True, onnx_cache) == int8
    assert onnx_encoder.exports_made == made
    assert (fp32.stat().st_mtime_ns, int8.stat().st_mtime_ns) == mtimes
    assert read_json(fp32.parent / onnx_encoder.RECORD_FILE)["weights_sha256"] == onnx_encoder.weights_digest(
        model_path()
    )


def test_a_crashed_exports_leftovers_are_removed_and_a_live_ones_kept(auto_encoder, onnx_cache):
    temps = sorted(p.name for p in onnx_cache.glob(f"{onnx_encoder.TEMP_PREFIX}*"))
    assert temps == [f"{onnx_encoder.TEMP_PREFIX}{os.getppid()}-running"]


def test_an_export_that_fails_midway_leaves_nothing_under_the_final_name(auto_encoder, onnx_cache, tmp_path):
    fp32 = onnx_encoder.export_path(model_path(), False, onnx_cache)
    cache = tmp_path / "cache"  # the fp32 export (hard links), no int8 yet
    shutil.copytree(fp32.parent, cache / fp32.parent.name, copy_function=os.link)

    def crash(source, out):
        out.write_bytes(b"partial")
        raise RuntimeError("killed mid-quantization")

    original = onnx_encoder._quantize
    onnx_encoder._quantize = crash
    try:
        with pytest.raises(RuntimeError, match="mid-quantization"):
            onnx_encoder.ensure_export(model_path(), True, cache)
    finally:
        onnx_encoder._quantize = original
    assert not onnx_encoder.export_path(model_path(), True, cache).parent.exists()
    assert sorted(p.name for p in cache.iterdir()) == [fp32.parent.name]


def test_the_manifest_records_the_backend_and_reuse_never_mixes_int8_with_fp32(
    tmp_path, topic_documents, tokenizer, auto_encoder, int8_encoder, torch_encoder
):
    build_index(topic_documents, tmp_path / "int8", tokenizer, int8_encoder, chunk_size=8)
    build_index(topic_documents, tmp_path / "fp32", tokenizer, auto_encoder, chunk_size=8)
    int8_manifest = read_json(resolve_version_dir(tmp_path / "int8") / MANIFEST)
    assert int8_manifest["encoder_backend"] == "onnx-int8"
    assert int8_manifest["encoder"] == auto_encoder.name
    assert read_json(resolve_version_dir(tmp_path / "fp32") / MANIFEST)["encoder_backend"] == "onnx"
    with pytest.raises(ValueError, match="int8 and fp32"):
        ReusingEncoder(auto_encoder, tmp_path / "int8", tokenizer)
    with pytest.raises(ValueError, match="int8 and fp32"):
        ReusingEncoder(int8_encoder, tmp_path / "fp32", tokenizer)
    reusing = ReusingEncoder(torch_encoder, tmp_path / "fp32", tokenizer)  # ONNX fp32 vectors for torch
    build_index(topic_documents, tmp_path / "torch", tokenizer, reusing, chunk_size=8)
    assert reusing.encoded == 0 and reusing.reused > 0
    assert read_json(resolve_version_dir(tmp_path / "torch") / MANIFEST)["encoder_backend"] == "torch"
