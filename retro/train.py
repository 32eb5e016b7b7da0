"""The training loop: AdamW, warmup + cosine, bf16 on GPU, gradient accumulation, exact resume, DDP.

`train(run_dir, config, data, tokenizer, steps, batch_size, ...)` trains `Retro(config)` on batches
from `data` (anything with `.batch(step, batch_size, rank, world_size) -> Batch`, a pure function of
its seed, step and rank, such as `retro.data.TrainingData`) and leaves in `run_dir` the servable
checkpoint, the training state and the log (`retro.run_folder` has the layout).

Rerunning the same call resumes from `train_state/` and produces the same losses as a run that was
never interrupted: the data is a function of the step, the learning rate a function of the step
(`retro.schedule`), and the random state (dropout) is reseeded from (seed, step, rank) at every
step, so nothing hidden carries over. Under `torchrun` it runs DistributedDataParallel (rank and
world size from the environment, `retro.devices`); only rank 0 writes. This module owns the loop;
the model's shape is `RetroConfig`'s, the checkpoint format is `retro.checkpoint`'s, and the
batches are the data source's business.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
import torch.nn as nn

from retro.checkpoint import CONFIG_FILE
from retro.config import RetroConfig
from retro.devices import Distributed, distributed_from_env, process_group, resolve_device, wrap_for_ddp
from retro.growth import GROWN_FIELDS, grow_neighbour_positions, growth_clash, zero_new_outputs
from retro.model import Retro
from retro.run_folder import (
    LOG_FILE,
    load_train_state,
    publish_checkpoint,
    read_train_state,
    rewrite_log,
    save_train_state,
)
from retro.schedule import default_warmup, learning_rate, make_optimizer
from retro.tokenizer import Tokenizer
from retro.word_meaning import table_fingerprint


class BatchLike(Protocol):
    tokens: torch.Tensor  # (B, T) int64 inputs
    targets: torch.Tensor  # (B, T) int64, -100 = ignored
    neighbours: torch.Tensor | None  # (B, T // m, k, r) int64, or None for a no-retrieval model


class BatchSource(Protocol):
    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> BatchLike: ...


@dataclass(frozen=True)
class TrainArgs:
    """Everything that decides the numbers a run produces; a resume must use the same values."""

    steps: int
    batch_size: int  # sequences per optimizer step, over all ranks and accumulation steps
    lr: float
    warmup: int
    min_lr_ratio: float
    weight_decay: float
    grad_accum: int
    grad_clip: float  # 0 disables clipping (the norm is still logged)
    seed: int
    world_size: int

    def check(self) -> None:
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be >= 1; got {self.steps}")
        if self.grad_accum < 1:
            problems.append(f"grad_accum must be >= 1; got {self.grad_accum}")
        if self.batch_size < 1 or self.batch_size % (self.world_size * self.grad_accum):
            problems.append(
                f"batch_size={self.batch_size} must be a positive multiple of world_size x grad_accum "
                f"= {self.world_size} x {self.grad_accum}"
            )
        if not self.lr > 0:
            problems.append(f"lr must be > 0; got {self.lr}")
        if self.warmup < 0:
            problems.append(f"warmup must be >= 0; got {self.warmup}")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"min_lr_ratio must lie in [0, 1]; got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            problems.append("weight_decay and grad_clip must be >= 0")
        if problems:
            raise ValueError("invalid training arguments: " + "; ".join(problems))


@dataclass
class TrainResult:
    run_dir: Path
    step: int  # optimizer steps done (== steps unless stopped early by on_step)
    loss: float | None  # the last step's loss (None if this call did no step)
    tokens_seen: int
    elapsed_s: float  # over all sessions of the run, resumes included


# ----------------------------------------------------------------------------------------------
# one step's helpers


class _Loss(nn.Module):
    """The model's training loss as a module's forward: DistributedDataParallel synchronises the
    gradients of what runs inside the forward of the module it wraps, and `Retro.forward` gives
    log-probabilities, not the loss."""

    def __init__(self, model: Retro):
        super().__init__()
        self.model = model

    def forward(self, tokens, neighbours, targets):
        return self.model.loss(tokens, neighbours, targets)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one step on one rank: dropout masks depend on nothing but these three."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[tokens_per_s]:>8,.0f} tok/s  loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"
        ),
        TimeRemainingColumn(),
        console=Console(stderr=True),  # stdout stays free for a command's result
        disable=not enabled,
    )


# ----------------------------------------------------------------------------------------------
# the loop


def train(
    run_dir: str | Path,
    config: RetroConfig,
    data: BatchSource,
    tokenizer: Tokenizer,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    warmup: int | None = None,
    min_lr_ratio: float = 0.1,
    weight_decay: float = 0.1,
    grad_accum: int = 1,
    grad_clip: float = 1.0,
    ckpt_every: int = 500,
    log_every: int = 10,
    seed: int = 0,
    device: str = "auto",
    on_step: Callable[[dict], bool | None] | None = None,
    meta: dict | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
    word_table: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Trains `Retro(config)` into `run_dir`, resuming from its training state if there is one.

    `batch_size` sequences make one optimizer step (split over ranks, then into `grad_accum`
    micro-batches; the gradient is the same as without accumulation). `warmup=None` takes
    min(200, steps // 10). Checkpoints are written every `ckpt_every` steps and at the end.
    `on_step(record)` is called on rank 0 after every step with the step's record (the log line's
    fields); returning True stops the run after a checkpoint. `meta` (JSON) is stored in the
    checkpoint and must match on resume, like every argument that decides the numbers.
    `init_from` (a model or run folder) starts a new run from that checkpoint's weights instead of
    a random initialisation (fine-tuning; see `initial_weights`); a resume ignores it.
    `word_table` (`retro.word_meaning.build_word_table`) fills a new run's word-meaning table when
    `config.word_dim` is on (its fingerprint goes into `meta`, so a resume must pass the same one).
    """
    run_dir = Path(run_dir)
    dist_env = distributed_from_env()
    args = TrainArgs(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=default_warmup(steps) if warmup is None else warmup,
        min_lr_ratio=min_lr_ratio,
        weight_decay=weight_decay,
        grad_accum=grad_accum,
        grad_clip=grad_clip,
        seed=seed,
        world_size=dist_env.world_size,
    )
    args.check()
    if ckpt_every < 1 or log_every < 1:
        raise ValueError(f"ckpt_every and log_every must be >= 1; got {ckpt_every} and {log_every}")
    if not callable(getattr(data, "batch", None)):
        raise ValueError("data must have a .batch(step, batch_size, rank, world_size) method")
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but config.vocab_size is {config.vocab_size}"
        )
    if bool(config.word_dim) != (word_table is not None):
        raise ValueError("config.word_dim > 0 needs a word_table, and a word_table needs word_dim > 0")
    if word_table is not None:
        meta = {**(meta or {}), "word_table": table_fingerprint(word_table)}
    start = None
    if init_from is not None:  # read on a resume too: its save id is part of the run's identity
        start = initial_weights(init_from, config, tokenizer)
        source = {"path": str(Path(init_from).resolve()), "save_id": start.save_id,
                  "tokens_before": start.tokens_before}  # fmt: skip
        meta = {**(meta or {}), "init_from": source}
    meta = json.loads(json.dumps(meta or {}))  # JSON-normalised, so a resume compares like with like
    torch_device = resolve_device(device, dist_env.local_rank)
    if torch_device.type == "cpu":
        # Denormal floats (the copy head's vanishing pointer gradients) make CPU matrix products
        # many times slower: a demo run fell from 5,500 to 650 tokens/s within 300 steps.
        torch.set_flush_denormal(True)

    with process_group(dist_env, torch_device):
        return _run(run_dir, config, data, tokenizer, args, ckpt_every, log_every, torch_device,
                    dist_env, on_step, meta, progress, None if start is None else start.state,
                    word_table)  # fmt: skip


def _identity(config: RetroConfig, args: TrainArgs, meta: dict) -> dict:
    return {"config": config.to_dict(), "args": asdict(args), "meta": meta}


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} saved, {b!r} now")
    return out


# Config fields a fine-tune may switch on over a checkpoint that has them off: their parameters
# start at values that leave the model's outputs unchanged (see RetroConfig).
ADDITIVE_FIELDS = {
    "copy_bag_window": 0,
    "copy_neighbour_bag": False,
    "word_dim": 0,
    "word_rows": 0,
    "word_keys": 0,
    "copy_meaning_bag": False,
    "copy_match_gate": False,
}
# Fields that shape no parameter: a fine-tune may change them (k neighbours per chunk: the encoder
# and the cross-attention take any k, as inference does; the settings of inference: its k, its query
# window, its first token's copy bias and candidates)
FREE_FIELDS = frozenset(
    {
        "n_neighbours",
        "inference_neighbours",
        "inference_query_tokens",
        "inference_first_copy_bias",
        "inference_first_candidates",
        "inference_span_weight",
        "inference_span_floor",
        "inference_span_follow",
    }
)


@dataclass(frozen=True)
class StartWeights:
    """A checkpoint to fine-tune from: its weights, save id and the training tokens behind them."""

    state: dict[str, torch.Tensor]  # lacks only switched-on ADDITIVE_FIELDS' and grown blocks' parameters
    save_id: str | None
    tokens_before: int


def initial_weights(folder: str | Path, config: RetroConfig, tokenizer: Tokenizer) -> StartWeights:
    """The weights to fine-tune `Retro(config)` from.

    The checkpoint's config must equal `config` but for `ADDITIVE_FIELDS` it has off, whose new
    parameters then keep their initial values, `FREE_FIELDS`, and `GROWN_FIELDS` that `config`
    grows (`retro.growth`: new blocks whose residual outputs start at zero); its tokenizer must be
    `tokenizer`.
    """
    from retro.checkpoint import CheckpointError, load_checkpoint

    try:
        source, source_tokenizer, source_meta = load_checkpoint(folder)
    except (CheckpointError, FileNotFoundError, OSError) as e:
        raise ValueError(f"cannot fine-tune from {folder}: {e}") from e
    have, want = source.config.to_dict(), config.to_dict()
    # a field absent from the checkpoint's config (saved before it existed, or written only when
    # on) is off there
    switched_on = {k for k, off in ADDITIVE_FIELDS.items() if have.get(k, off) == off}
    clash = [f"{k}: {have.get(k)!r} there, {want[k]!r} here" for k in sorted(want)
             if have.get(k) != want[k] and k not in switched_on | FREE_FIELDS | GROWN_FIELDS]  # fmt: skip
    clash += growth_clash(have, want)
    if clash:
        raise ValueError(f"cannot fine-tune from {folder}: its config differs ({'; '.join(clash[:4])})")
    if source_tokenizer.fingerprint != tokenizer.fingerprint:
        raise ValueError(f"cannot fine-tune from {folder}: its tokenizer is not the index's")
    state = source.state_dict()
    grow_neighbour_positions(state, config.retrieved_len, config.chunk_size)
    save_id = json.loads((Path(folder) / CONFIG_FILE).read_text()).get("save_id")
    # the tokens behind the source's weights: its own run's and those of what it started from
    tokens_before = int((source_meta.get("training") or {}).get("tokens_seen") or 0)
    tokens_before += int((source_meta.get("init_from") or {}).get("tokens_before") or 0)
    return StartWeights(state, save_id, tokens_before)


def _run(run_dir, config, data, tokenizer, args: TrainArgs, ckpt_every, log_every, device,
         dist_env: Distributed, on_step, meta, progress, start_state=None,
         word_table=None) -> TrainResult:  # fmt: skip
    torch.manual_seed(args.seed)
    model = Retro(config)
    if word_table is not None:  # frozen buffers; a resume loads them again from its own state
        model.word_meanings.load_table(word_table)
    saved = read_train_state(run_dir)
    if start_state is not None and saved is None:  # fine-tuning; a resume loads its own state below
        # the config check of `initial_weights` leaves only switched-on features' parameters and
        # grown blocks missing; the grown blocks' residual outputs start at zero (`retro.growth`)
        loaded = model.load_state_dict(start_state, strict=False)
        if loaded.unexpected_keys:
            raise ValueError(
                "the weights to fine-tune from hold parameters this model lacks: "
                f"{loaded.unexpected_keys[:4]}"
            )
        zero_new_outputs(model, loaded.missing_keys)
    model = model.to(device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
    identity = _identity(config, args, meta)

    start_step, elapsed_before, tokens_seen = 0, 0.0, 0
    if saved is not None:
        differences = _differences({k: saved.get(k) for k in identity}, identity)
        if differences:
            raise ValueError(
                f"{run_dir} holds a run with other settings ({'; '.join(differences[:4])}); "
                "rerun with the same settings to resume, or train into a new folder"
            )
        saved = load_train_state(run_dir, model, optimizer)
        start_step, elapsed_before, tokens_seen = saved["step"], saved["elapsed_s"], saved["tokens_seen"]
    elif (run_dir / CONFIG_FILE).exists():
        raise ValueError(
            f"{run_dir} holds a checkpoint but no training state to resume from: train into a new folder"
        )
    if dist_env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rewrite_log(run_dir, start_step)

    trained = _Loss(model)
    if dist_env.world_size > 1:
        trained = wrap_for_ddp(trained, device)

    def checkpoint(step: int, loss: float | None, elapsed: float, with_state: bool = True) -> None:
        if dist_env.is_main:
            if with_state:
                body = {**identity, "step": step, "elapsed_s": elapsed, "tokens_seen": tokens_seen,
                        "loss": loss, "rng": "reseeded from (seed, step, rank) at every step"}  # fmt: skip
                save_train_state(run_dir, model, optimizer, body)
            training = {"step": step, "loss": loss, "tokens_seen": tokens_seen, "elapsed_s": elapsed,
                        "args": asdict(args)}  # fmt: skip
            publish_checkpoint(run_dir, model, tokenizer, {**meta, "training": training})
        if dist_env.world_size > 1:
            dist.barrier()

    if dist_env.world_size > 1:  # every rank has read the state before rank 0 writes again
        dist.barrier()
    if saved is not None:  # a kill mid-publish may have left mixed shards: republish the resumed step
        checkpoint(start_step, saved.get("loss"), elapsed_before, with_state=False)

    per_rank = args.batch_size // args.world_size
    session_start = time.perf_counter()
    last_loss: float | None = None
    done = start_step
    log_file = open(run_dir / LOG_FILE, "a") if dist_env.is_main else None  # noqa: SIM115
    bar = _progress_bar(progress and dist_env.is_main)
    try:
        with bar:
            task = bar.add_task("train", total=args.steps, completed=start_step, tokens_per_s=0.0,
                                loss=float("nan"), lr=0.0)  # fmt: skip
            interval_start, interval_tokens = time.perf_counter(), 0
            for step in range(start_step, args.steps):
                lr = learning_rate(step, steps=args.steps, lr=args.lr, warmup=args.warmup,
                                   min_lr_ratio=args.min_lr_ratio)  # fmt: skip
                loss, grad_norm, n_tokens = _train_step(
                    trained, optimizer, data, step, per_rank, lr, args, device, dist_env
                )
                tokens_seen += n_tokens * args.world_size
                interval_tokens += n_tokens * args.world_size
                done = step + 1
                writes_log = done % log_every == 0 or done == args.steps
                saves = done % ckpt_every == 0 or done == args.steps
                record = None
                # Reading the loss waits for the GPU, so it happens only where it is needed: a log
                # line, a callback, or a checkpoint (which must never store diverged weights).
                if writes_log or saves or on_step is not None:
                    if dist_env.world_size > 1:
                        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
                    last_loss, norm = loss.item(), grad_norm.item()
                    if not (math.isfinite(last_loss) and math.isfinite(norm)):
                        raise FloatingPointError(
                            f"training diverged at step {done} (loss {last_loss}, grad norm {norm}): "
                            f"lower the learning rate (now {args.lr:g}); the last checkpoint is intact"
                        )
                    now = time.perf_counter()
                    elapsed = elapsed_before + now - session_start
                    tokens_per_s = interval_tokens / max(now - interval_start, 1e-9)
                    interval_start, interval_tokens = now, 0
                    record = {"step": done, "loss": last_loss, "lr": lr, "tokens_per_s": tokens_per_s,
                              "elapsed_s": elapsed, "grad_norm": norm}  # fmt: skip
                    if log_file is not None and writes_log:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    bar.update(task, tokens_per_s=tokens_per_s, loss=last_loss, lr=lr)
                bar.update(task, completed=done)
                stop = bool(on_step(record)) if on_step is not None and dist_env.is_main else False
                if dist_env.world_size > 1 and on_step is not None:  # every rank stops together
                    flag = torch.tensor([int(stop)], device=device)
                    dist.broadcast(flag, src=0)
                    stop = bool(flag.item())
                if saves or stop:
                    checkpoint(done, last_loss, elapsed_before + time.perf_counter() - session_start)
                if stop:
                    break
    finally:
        if log_file is not None:
            log_file.close()
    return TrainResult(run_dir, done, last_loss, tokens_seen,
                       elapsed_before + time.perf_counter() - session_start)  # fmt: skip


def _train_step(trained, optimizer, data, step, per_rank, lr, args: TrainArgs, device, dist_env):
    """One optimizer step on this rank: returns (loss tensor, grad-norm tensor, tokens processed)."""
    torch.manual_seed(_step_seed(args.seed, step, dist_env.rank))
    trained.train()
    batch = data.batch(step, per_rank, dist_env.rank, dist_env.world_size)
    tokens, targets, neighbours = batch.tokens, batch.targets, batch.neighbours
    if tokens.dim() != 2 or tokens.shape[0] != per_rank or targets.shape != tokens.shape:
        raise ValueError(
            f"data.batch returned tokens {list(tokens.shape)} and targets {list(targets.shape)}; "
            f"expected [{per_rank}, T] both"
        )
    if neighbours is None and dist_env.world_size > 1 and trained.module.model.config.uses_retrieval:
        raise ValueError(
            "a RETRO model under DDP needs neighbours in every batch (its encoder would get no gradient)"
        )
    pieces = [torch.tensor_split(t, args.grad_accum) if t is not None else [None] * args.grad_accum
              for t in (tokens, targets, neighbours)]  # fmt: skip
    # Weight each micro-batch's mean loss by its share of target tokens, so that accumulation gives
    # the gradient of the whole batch's mean loss, not the mean of unequal micro-batch means.
    counts = [int((t != -100).sum()) for t in pieces[1]]
    total = max(sum(counts), 1)
    loss_sum = torch.zeros((), device=device)
    for i, (tok, tgt, nb) in enumerate(zip(*pieces, strict=True)):
        last = i == args.grad_accum - 1
        sync = contextlib.nullcontext() if last or dist_env.world_size == 1 else trained.no_sync()
        with sync:
            with _autocast(device):
                loss = trained(
                    tok.to(device, non_blocking=True),
                    None if nb is None else nb.to(device, non_blocking=True),
                    tgt.to(device, non_blocking=True),
                )
            (loss * (counts[i] / total)).backward()
        loss_sum += loss.detach().float() * (counts[i] / total)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip if args.grad_clip > 0 else float("inf"))
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, tokens.numel()
