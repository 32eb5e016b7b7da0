"""Devices and processes: which torch device a run uses, its rank under `torchrun`, and DDP's set-up.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N")` turns a command's device word into a
`torch.device`; `distributed_from_env()` reads the rank and world size that `torchrun` sets;
`process_group(...)` starts and tears down the process group of a multi-process run, and
`wrap_for_ddp(...)` wraps a model in DistributedDataParallel. Training (`retro.train`) and the
commands use these; nothing here knows about models or data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Distributed:
    rank: int
    local_rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain run is rank 0 of 1."""
    return Distributed(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device cuda was asked for but torch sees no CUDA GPU (use --device cpu)")
        return torch.device(device if ":" in device else f"cuda:{local_rank}")
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(dist_env: Distributed, device: torch.device) -> Iterator[None]:
    """Starts the process group of a multi-process run (unless one is running) for the body.

    NCCL on GPU, gloo on CPU. Every rank meets at a barrier before the group is destroyed: a gloo
    rank whose peer closed its connections mid-teardown can abort (seen once in CI: SIGABRT in
    rank 1). A single-process run, or one whose group the caller started, passes straight through.
    """
    if dist_env.world_size <= 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        dist.barrier()  # only when the body finished: a failing rank must not wait for its peers
    finally:
        dist.destroy_process_group()


def wrap_for_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under DistributedDataParallel, for a run of more than one process."""
    # Every parameter takes part in every step (a RETRO model's batches must carry neighbours
    # under DDP, checked by the training step), so DDP need not search the graph for unused ones.
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
