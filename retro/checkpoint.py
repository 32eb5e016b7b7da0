"""Checkpoints: one folder holding safetensors weights, the config as JSON and the tokenizer.

Layout (Hugging Face's sharding convention, so large models come back from the GPU machine in
pieces of at most `max_shard_bytes`):

    config.json         {"format": "retro-checkpoint", "version": 1, "config": {...}, "meta": {...}}
    model.safetensors   when everything fits in one shard, else
    model-00001-of-00003.safetensors ... and model.safetensors.index.json (tensor -> shard file)
    tokenizer.json

Loading never unpickles. A save is atomic: it is written to a temporary sibling folder and renamed
into place, so a crash mid-save leaves the previous checkpoint whole. Training state (optimizer,
step, data position) is the trainer's business and lives beside, not inside, these files.

Every save has a random `save_id`, written into config.json and into each shard's safetensors
metadata. A trainer republishes into a live run folder file by file
(`retro.run_folder.publish_checkpoint`), so a load racing it could see shards of two steps;
`load_checkpoint` detects that by the ids (each shard's id and tensors come from one read of one
open file), waits and reads again, and reports a folder that stays mixed. The two also take turns on
`folder_lock`, so that a live republish is never seen half done. Checkpoints saved before save ids
existed load unchecked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from retro.config import RetroConfig
from retro.model import Retro
from retro.tokenizer import Tokenizer

FORMAT, VERSION = "retro-checkpoint", 1
CONFIG_FILE, SINGLE_FILE, INDEX_FILE = "config.json", "model.safetensors", "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 16 * 1024 * 1024
SAVE_ID_KEY = "retro_save_id"  # in each shard's safetensors metadata; "save_id" in config.json
# Waits before reading a mixed folder again: about 1.5 s in all, longer than a publish of the
# checkpoints this project trains takes (tens of milliseconds for small models).
TORN_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupted, or does not match its own config."""


class TornCheckpointError(CheckpointError):
    """The folder holds files of two different saves (a save in progress, or one killed mid-way)."""


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for name, tensor in state.items():
        n = tensor.numel() * tensor.element_size()
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = tensor
        size += n
    return [*shards, current]


def save_checkpoint(
    folder: str | Path,
    model: Retro,
    tokenizer: Tokenizer,
    meta: dict | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | None = None,
    extra_files: Sequence[Path] = (),
) -> Path:
    """Writes the checkpoint atomically; `meta` is free-form JSON (training command, data, figures).

    `dtype` (e.g. torch.float16) stores floating-point weights in that type, to halve a published
    checkpoint; `load_checkpoint` casts them back to the model's float32 parameters. `extra_files`
    are copied in beside the weights (the span reader's, `retro.span_reader.FILE`), in the same swap.
    """
    folder = Path(folder)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{model.config.vocab_size}"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_id = uuid.uuid4().hex
    shard_metadata = {"format": "pt", SAVE_ID_KEY: save_id}
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        shards = _shards(state, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SINGLE_FILE), metadata=shard_metadata)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata=shard_metadata)
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total, SAVE_ID_KEY: save_id}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2))
        body = {
            "format": FORMAT,
            "version": VERSION,
            "save_id": save_id,
            "config": model.config.to_dict(),
            "meta": meta or {},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(body, indent=2, sort_keys=True))
        tokenizer.save(tmp)
        for extra in extra_files:
            shutil.copyfile(extra, tmp / Path(extra).name)
        _apply_umask(tmp)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def replace_folder(new: Path, target: Path) -> None:
    """Swaps a complete folder into place; `.NAME.old` is left only if we die between the renames."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """mkdtemp makes 0700 folders and safetensors 0600 files; a checkpoint should be as readable
    as any file its owner writes (a server may run as another user)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def read_config(folder: str | Path) -> tuple[RetroConfig, dict]:
    """The model config and meta of a checkpoint, without loading any weights."""
    config, meta, _save_id = _read_config_body(folder)
    return config, meta


def _read_config_body(folder: str | Path) -> tuple[RetroConfig, dict, str | None]:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a retro checkpoint: {CONFIG_FILE} is missing")
    try:
        body = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a retro checkpoint config (format {FORMAT!r} expected)")
    if body.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {body.get('version')}; this code reads {VERSION}"
        )
    try:
        return RetroConfig.from_dict(body["config"]), body.get("meta", {}), body.get("save_id")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} holds an invalid model config: {e}") from e


def _read_shard(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of one safetensors file, both from a single read of one open file.

    `safe_open` would not do: it reads the header through one open of the path and the tensors
    through a second (torch's `UntypedStorage.from_file`), so a republish replacing the file
    between the two gave one save's save id with another save's weights.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes are too few for a safetensors header")
    header_len = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"the safetensors header is not JSON: {e}") from e
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata or {}, load_safetensors(data)


def _load_state(folder: Path, save_id: str | None) -> dict[str, torch.Tensor]:
    """All weight shards; with a `save_id`, every shard (and the shard index) must carry it."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            files = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index_path} is not a valid shard index: {e}") from e
        if save_id is not None and index.get("metadata", {}).get(SAVE_ID_KEY) != save_id:
            raise TornCheckpointError(f"{index_path} belongs to another save than {CONFIG_FILE}")
    elif (folder / SINGLE_FILE).is_file():
        files = [SINGLE_FILE]
    else:
        raise CheckpointError(f"{folder} holds no weights ({SINGLE_FILE} or {INDEX_FILE})")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            # a republish that changed the shard count may be between its renames
            error = TornCheckpointError if save_id is not None else CheckpointError
            raise error(f"weight shard {path} is missing")
        try:
            shard_metadata, tensors = _read_shard(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"weight shard {path} is corrupted: {e}") from e
        shard_id = shard_metadata.get(SAVE_ID_KEY)
        if save_id is not None and shard_id != save_id:
            raise TornCheckpointError(f"weight shard {path} belongs to another save than {CONFIG_FILE}")
        state.update(tensors)
    return state


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, shared: bool) -> Iterator[None]:
    """An advisory flock on the checkpoint folder itself (no lock file: read-only folders work).

    `retro.run_folder.publish_checkpoint` holds it exclusively while it replaces a live folder's
    files one by one, `load_checkpoint` shared while it reads one save's files, so a load never
    sees a republish half done (the save ids still catch a folder left mixed by a killed writer,
    or one written without the lock). A folder that cannot be opened is not locked (its reader
    reports what is wrong), nor one on a file system without flock: the save ids remain.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_consistent(folder: Path) -> tuple[RetroConfig, dict, dict[str, torch.Tensor], Tokenizer]:
    """(config, meta, weights, tokenizer) of one save, reading again while the folder is mixed."""
    for delay in (*TORN_RETRY_DELAYS, None):
        try:
            with folder_lock(folder, shared=True):
                config, meta, save_id = _read_config_body(folder)
                state = _load_state(folder, save_id)
                try:
                    tokenizer = Tokenizer.load(folder)
                except (FileNotFoundError, ValueError) as e:
                    raise CheckpointError(f"{folder}: {e}") from e
            return config, meta, state, tokenizer
        except TornCheckpointError as e:
            if delay is None:
                raise TornCheckpointError(
                    f"{folder} mixes files of two saves ({e}): a save is still writing it, or one was "
                    "killed mid-way (resuming the training run republishes its checkpoint)"
                ) from e
            time.sleep(delay)
    raise AssertionError("unreachable")


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Retro, Tokenizer, dict]:
    """Returns (model in eval mode on `device`, tokenizer, meta). Raises CheckpointError on any defect."""
    folder = Path(folder)
    config, meta, state, tokenizer = _load_consistent(folder)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(
            f"{folder}: tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    model = Retro(config)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{folder}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer, meta
