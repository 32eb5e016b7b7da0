"""A training run's folder: the training state an exact resume needs, the servable checkpoint
republished beside it, and the log.

    config.json, model*.safetensors, tokenizer.json   the servable checkpoint (`retro.checkpoint`)
    train_state/   model.safetensors (fp32), optimizer.safetensors, state.json: what an exact resume needs
    log.jsonl      one JSON line per logged step: step, loss, lr, tokens_per_s, elapsed_s, grad_norm

The training state is written without pickle (tensors as safetensors, the rest as JSON) and
swapped in as a whole folder; the checkpoint is republished file by file so that a server reading
the folder meanwhile gets one whole save (`publish_checkpoint`). The loop (`retro.train`) decides
when each is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from retro.checkpoint import (
    CONFIG_FILE,
    DEFAULT_MAX_SHARD_BYTES,
    folder_lock,
    replace_folder,
    save_checkpoint,
)
from retro.model import Retro
from retro.tokenizer import Tokenizer

STATE_DIR, STATE_FILE = "train_state", "state.json"
STATE_MODEL, STATE_OPTIMIZER = "model.safetensors", "optimizer.safetensors"
LOG_FILE = "log.jsonl"
STATE_FORMAT, STATE_VERSION = "retro-train-state", 1


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> flat tensors for safetensors + JSON-able rest (param groups, scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def _state_dir(run_dir: Path) -> Path | None:
    """The folder to resume from: train_state/, or its old copy if a swap was cut short."""
    for candidate in (run_dir / STATE_DIR, run_dir / f".{STATE_DIR}.old"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def save_train_state(run_dir: Path, model: Retro, optimizer, body: dict) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{STATE_DIR}.", dir=run_dir))
    try:
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / STATE_MODEL))
        tensors, rest = _optimizer_tensors(optimizer)
        save_file(tensors, str(tmp / STATE_OPTIMIZER))
        body = {"format": STATE_FORMAT, "version": STATE_VERSION, **body, "optimizer": rest}
        (tmp / STATE_FILE).write_text(json.dumps(body, indent=2, sort_keys=True))
        replace_folder(tmp, run_dir / STATE_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_train_state(run_dir: str | Path) -> dict | None:
    """The JSON part of a run's training state (step, args, config, ...), or None for a fresh run."""
    folder = _state_dir(Path(run_dir))
    if folder is None:
        return None
    body = json.loads((folder / STATE_FILE).read_text())
    if body.get("format") != STATE_FORMAT or body.get("version") != STATE_VERSION:
        raise ValueError(f"{folder / STATE_FILE} is not a retro training state of version {STATE_VERSION}")
    return body


def load_train_state(run_dir: Path, model: Retro, optimizer) -> dict:
    folder = _state_dir(run_dir)
    body = read_train_state(run_dir)
    model.load_state_dict(load_file(str(folder / STATE_MODEL)))
    optimizer.load_state_dict(_optimizer_state(load_file(str(folder / STATE_OPTIMIZER)), body["optimizer"]))
    return body


def publish_checkpoint(
    run_dir: Path,
    model: Retro,
    tokenizer: Tokenizer,
    meta: dict,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Writes the servable checkpoint into `run_dir` beside train_state/ and log.jsonl.

    `save_checkpoint` replaces a whole folder, so it writes a staging folder whose files are then
    moved in one by one with os.replace, config.json last, and shards the new save no longer has are
    deleted after that, all under the folder's exclusive `folder_lock`, which `load_checkpoint`
    takes shared: a load racing this reads the files of one save, before or after it (briefly
    holding up the trainer, or held up by it). Should a writer die mid-way, the save ids tell the
    files of two saves apart.
    """
    staged = save_checkpoint(run_dir / ".checkpoint-staging", model, tokenizer, meta, max_shard_bytes)
    new_files = sorted(p.name for p in staged.iterdir())
    # safetensors writes its files owner-only; give every file the umask's mode that config.json got,
    # so that a server running as another user can read the checkpoint
    mode = (staged / CONFIG_FILE).stat().st_mode & 0o777
    for name in new_files:
        os.chmod(staged / name, mode)
    with folder_lock(run_dir, shared=False):  # a load waits for the whole swap (or it for the load)
        for name in sorted(new_files, key=lambda n: n == CONFIG_FILE):
            os.replace(staged / name, run_dir / name)
        for stale in run_dir.glob("model*.safetensors*"):
            if stale.name not in new_files:
                stale.unlink()
    staged.rmdir()


def rewrite_log(run_dir: Path, up_to_step: int) -> None:
    """Drops log lines past the resumed step (written after the checkpoint, before the kill)."""
    path = run_dir / LOG_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if record.get("step", 0) <= up_to_step:
            kept.append(line)
    tmp = path.with_name(f".{LOG_FILE}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
