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


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(state, expected) -> bool:
    return all(torch.equal(state[k], v) for k, v in expected.items())


def test_shards_of_two_saves_are_a_clear_error(model, tokenizer, tmp_path, monkeypatch):
    """A folder left mixed (a republish killed between its renames) is refused, not half-loaded."""
    monkeypatch.setattr(ckpt, "TORN_RETRY_DELAYS", (0.0,))
    first = save_checkpoint(tmp_path / "a", model, tokenizer, max_shard_bytes=20_000)
    second = save_checkpoint(
        tmp_path / "b", make_model(model.config, seed=5), tokenizer, max_shard_bytes=20_000
    )
    shard = sorted(first.glob("model-*.safetensors"))[1]
    shard.write_bytes((second / shard.name).read_bytes())
    with pytest.raises(CheckpointError, match="mixes files of two saves"):
        load_checkpoint(first)


def test_load_racing_a_republish_gets_one_whole_save(model, tokenizer, tmp_path):
    """A server started while training republishes its run folder loads the weights of one step."""
    import threading

    from retro.run_folder import publish_checkpoint

    models = [model, make_model(model.config, seed=5)]
    expected = [_weights(m) for m in models]
    run = tmp_path / "run"
    run.mkdir()
    publish_checkpoint(run, models[0], tokenizer, {"step": 0}, max_shard_bytes=20_000)
    assert len(list(run.glob("model-*.safetensors"))) > 1
    stop = threading.Event()

    def republish() -> None:
        step = 1
        while not stop.is_set():
            publish_checkpoint(run, models[step % 2], tokenizer, {"step": step}, max_shard_bytes=20_000)
            step += 1
            stop.wait(0.005)  # a trainer publishes between steps, not back to back

    writer = threading.Thread(target=republish)
    writer.start()
    try:
        for _ in range(40):
            loaded, _, meta = load_checkpoint(run)
            state = loaded.state_dict()
            assert _same(state, expected[meta["step"] % 2]), f"mixed weights at step {meta['step']}"
    finally:
        stop.set()
        writer.join()


def test_a_shard_replaced_between_its_header_and_its_tensors_is_not_mixed_in(
    model, tokenizer, tmp_path, monkeypatch
):
    """The window behind the racing test's rare "mixed weights": safetensors' `safe_open` reads a
    shard's header (its save id) through one open of the path and its tensors through a second
    (torch's `UntypedStorage.from_file`). A republish landing between the two is put there here."""
    import shutil

    first = save_checkpoint(tmp_path / "a", model, tokenizer, max_shard_bytes=20_000)
    other = save_checkpoint(
        tmp_path / "b", make_model(model.config, seed=5), tokenizer, max_shard_bytes=20_000
    )
    real_from_file = torch.UntypedStorage.from_file

    def republished_first(filename, *args, **kwargs):
        path = os.fspath(filename)
        staged = path + ".new"
        shutil.copyfile(other / os.path.basename(path), staged)
        os.replace(staged, path)  # as publish_checkpoint replaces a shard
        return real_from_file(filename, *args, **kwargs)

    monkeypatch.setattr(torch.UntypedStorage, "from_file", republished_first)
    monkeypatch.setattr(ckpt, "TORN_RETRY_DELAYS", (0.0,))
    expected = _weights(model)
    try:
        loaded, _, _ = load_checkpoint(first)
    except CheckpointError:  # the swap was seen: a refusal is fine, mixed weights are not
        return
    assert _same(loaded.state_dict(), expected)


def test_checkpoints_without_save_ids_still_load(model, tokenizer, tmp_path):
    """Checkpoints written before save ids existed (the shipped demo models) load unchecked."""
    folder = save_checkpoint(tmp_path / "run", model, tokenizer, max_shard_bytes=20_000)
    body = json.loads((folder / "config.json").read_text())
    del body["save_id"]
    (folder / "config.json").write_text(json.dumps(body))
    loaded, _, _ = load_checkpoint(folder)
    assert _same(loaded.state_dict(), _weights(model))
