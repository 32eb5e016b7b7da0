"""Checkpoints round-trip exactly, shard, never unpickle, and fail with clear errors."""

import json
import os
import stat

import pytest
import torch

import retro.checkpoint as ckpt
from retro.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .conftest import make_model, tiny_config
from .test_model import random_inputs


@pytest.fixture()
def model(tokenizer):
    return make_model(tiny_config(vocab_size=tokenizer.vocab_size))


@pytest.mark.parametrize("max_shard_bytes", [16 * 1024 * 1024, 20_000])
def test_round_trip_gives_identical_logits(model, tokenizer, tmp_path, max_shard_bytes):
    folder = save_checkpoint(
        tmp_path / "run", model, tokenizer, meta={"steps": 3}, max_shard_bytes=max_shard_bytes
    )
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert (len(shards) > 1) == (max_shard_bytes == 20_000)
    loaded, tok, meta = load_checkpoint(folder)
    tokens, neighbours = random_inputs(model.config)
    torch.testing.assert_close(loaded(tokens, neighbours), model(tokens, neighbours), atol=0, rtol=0)
    assert tok.fingerprint == tokenizer.fingerprint and meta == {"steps": 3}
    assert loaded.config == model.config and not loaded.training


def test_corrupted_shard_is_a_clear_error(model, tokenizer, tmp_path):
    folder = save_checkpoint(tmp_path / "run", model, tokenizer)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(folder)


def test_mismatched_config_is_a_clear_error(model, tokenizer, tmp_path):
    folder = save_checkpoint(tmp_path / "run", model, tokenizer)
    body = json.loads((folder / "config.json").read_text())
    body["config"]["d_ff"] = 128
    (folder / "config.json").write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "config.json").write_text("{"), "not valid JSON"),
        (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer"),
        (lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    ],
)
def test_missing_parts_are_clear_errors(model, tokenizer, tmp_path, damage, message):
    folder = save_checkpoint(tmp_path / "run", model, tokenizer)
    damage(folder)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_failed_save_leaves_previous_checkpoint_whole(model, tokenizer, tmp_path, monkeypatch):
    folder = save_checkpoint(tmp_path / "run", model, tokenizer, meta={"version": "old"})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(folder, make_model(model.config, seed=5), tokenizer, meta={"version": "new"})
    _, _, meta = load_checkpoint(folder)
    assert meta == {"version": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary folder left behind


def test_checkpoint_is_as_readable_as_the_umask_allows(model, tokenizer, tmp_path):
    old = os.umask(0o022)
    try:
        folder = save_checkpoint(tmp_path / "run", model, tokenizer)
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}
