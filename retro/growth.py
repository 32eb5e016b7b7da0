"""Growing a checkpoint into a deeper model for a fine-tune: more decoder blocks, more
neighbour-encoder blocks, chunked cross-attention in more blocks.

A fine-tune (`retro train --init-from`) may ask for a config that is the start checkpoint's grown:
`n_layers` and `enc_layers` at least the checkpoint's (new blocks appended after its own) and
`cca_layers` a superset of its own with the same first CCA layer (the neighbours are encoded
conditioned on the states entering it, so an earlier one would change them). Every residual
branch adds the output of a linear layer named `proj` to the residual stream (`retro.attention`),
so a new block, or a new cross-attention in an old block, whose `proj` weights and biases are zero
adds nothing: the grown model computes what the checkpoint computed, and training then moves the
new weights away from zero (the gradient of a zero `proj` is not zero: its input is not).
`retro.train.initial_weights` checks the configs with `growth_clash`; `retro.train` zeroes the new
outputs with `zero_new_outputs`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# config fields a fine-tune may grow (`growth_clash` says how a grown value relates to the checkpoint's)
GROWN_FIELDS = frozenset({"n_layers", "enc_layers", "cca_layers"})


def growth_clash(have: dict, want: dict) -> list[str]:
    """The grown fields of config `want` (dicts, `RetroConfig.to_dict`) that are not a growth of
    checkpoint config `have`'s: a shallower model, cross-attention taken out of a block or added
    before the first (see the module docstring)."""
    clash = []
    for key in ("n_layers", "enc_layers"):
        if want[key] < have[key]:
            clash.append(f"{key}: {have[key]!r} there, {want[key]!r} here (a fine-tune can only add blocks)")
    taken_out = set(have["cca_layers"]) - set(want["cca_layers"])
    if taken_out:
        clash.append(
            f"cca_layers: {list(have['cca_layers'])!r} there, {list(want['cca_layers'])!r} here "
            f"(a fine-tune cannot take cross-attention out of blocks {sorted(taken_out)})"
        )
    if not have["cca_layers"] and want["cca_layers"]:
        clash.append("cca_layers: a model without retrieval cannot be grown into one with it")
    elif want["cca_layers"] and min(want["cca_layers"]) < min(have["cca_layers"], default=0):
        clash.append(
            f"cca_layers: {list(want['cca_layers'])!r} adds cross-attention before block "
            f"{min(have['cca_layers'])}, the first there, whose states condition the neighbour encoder"
        )
    return clash


@torch.no_grad()
def zero_new_outputs(model: nn.Module, missing: list[str]) -> list[str]:
    """Zeroes the residual output projections (`*proj.weight`, `*proj.bias`) among the parameter
    names `missing` from the start checkpoint; returns the names zeroed."""
    parameters = dict(model.named_parameters())
    zeroed = [name for name in missing if name.rsplit(".", 2)[-2:-1] == ["proj"] and name in parameters]
    for name in zeroed:
        parameters[name].zero_()
    return zeroed
