"""The optimiser and its schedule: AdamW over nanoGPT's two parameter groups, linear warmup then a
cosine decay. The learning rate is a pure function of the step, which is part of what makes a
resumed run (`retro.train`) give the same losses as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

BETAS = (0.9, 0.95)  # nanoGPT's; the prototype trained with these at lr 1e-3 (docs/design.md)


def default_warmup(steps: int) -> int:
    return min(200, steps // 10)


def learning_rate(step: int, *, steps: int, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """The lr of the update made at 0-based `step`: linear warmup to `lr` over `warmup` steps, then a
    cosine from `lr` down to `lr * min_lr_ratio`, reached at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    decay_steps = steps - 1 - warmup
    if decay_steps <= 0:
        return lr
    progress = min(1.0, (step - warmup) / decay_steps)
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """nanoGPT's split: matrices (linear weights, embeddings) decay; biases, LayerNorms and the
    cross-attention null slots, which act as biases, do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "null_kv" not in name else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device):
    groups = parameter_groups(model, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=1e-8, fused=device.type == "cuda")
