"""Growing a checkpoint into a deeper model for a fine-tune: more decoder blocks, more
neighbour-encoder blocks, chunked cross-attention in more blocks; longer neighbours.

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

Longer neighbours (`retrieved_len` above the checkpoint's, in whole chunks): a neighbour then shows
its chunk and more of the chunks after it (`index.version.VersionArrays.with_continuations`), so
that an answer a chunk or two past the chunk that matched the query is shown (a dialogue names its
subject in its first turn and answers turns later). The neighbour encoder's new positions start as
copies of its last chunk's positions (`grow_neighbour_positions`): the further continuation reads as
more continuation. Unlike new blocks this changes the outputs from the start (the model sees more
tokens), so such a fine-tune does not start at the checkpoint's loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# config fields a fine-tune may grow (`growth_clash` says how a grown value relates to the checkpoint's)
GROWN_FIELDS = frozenset({"n_layers", "enc_layers", "cca_layers", "retrieved_len"})
# the neighbour encoder's position table, which a longer retrieved_len grows
NEIGHBOUR_POSITIONS = "encoder.wpe.weight"


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
    if want["retrieved_len"] < have["retrieved_len"]:
        clash.append(
            f"retrieved_len: {have['retrieved_len']!r} there, {want['retrieved_len']!r} here "
            "(a fine-tune can only lengthen neighbours)"
        )
    elif want["retrieved_len"] > have["retrieved_len"] and (
        have["retrieved_len"] % have["chunk_size"] or want["retrieved_len"] % want["chunk_size"]
    ):
        clash.append(
            f"retrieved_len: {have['retrieved_len']!r} there, {want['retrieved_len']!r} here "
            f"(neighbours grow by whole chunks of {want['chunk_size']} tokens)"
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


@torch.no_grad()
def grow_neighbour_positions(state: dict[str, torch.Tensor], retrieved_len: int, chunk_size: int) -> None:
    """Lengthens the neighbour encoder's position table in `state` (a checkpoint's state dict) to
    `retrieved_len` rows in place: row p past the old length copies the old last chunk's row at the
    same offset in its chunk. Nothing happens when the table is that long already."""
    table = state.get(NEIGHBOUR_POSITIONS)
    if table is None or len(table) >= retrieved_len:
        return
    have = len(table)
    last_chunk = table[have - chunk_size : have]
    extra = torch.cat([last_chunk] * -(-(retrieved_len - have) // chunk_size))[: retrieved_len - have]
    state[NEIGHBOUR_POSITIONS] = torch.cat([table, extra])
