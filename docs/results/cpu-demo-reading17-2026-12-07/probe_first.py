"""Seventeenth-round inference probe: the first generated token drawn closer to the neighbours.

    cd /work/exp && FIRST=MODE PYTHONPATH=/work/main python probe_first.py index-serve dev \
        /work/main/models/demo --query-tokens 96 --mode lexical-titled --dump r17/dev-first-MODE

FIRST=none: the model as trained (the baseline of the pairs); FIRST=pointer: the pointer's mass
only (the vocabulary's share dropped); FIRST=mask: the mixture as trained, restricted to tokens the
neighbours hold; FIRST=soft:C: the copy head's null slot lowered by C nats, the pointer renormalised
(what `RetroConfig.inference_first_copy_bias` became; pointer is C = infinity). Applied to every
prefill position, of which only the last is read by generation; decode steps as trained. Runs the
third round's reading_check.py (dev reading items and the dev real facts).
"""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.copy_head import CopyHead  # noqa: E402
from retro.model import Retro  # noqa: E402

MODE = os.environ.get("FIRST", "pointer")
_mix = CopyHead.mix
_prefill = Retro.prefill
state = {"on": False}


def mix(vocab_logits, pointer_logp, ids):
    if not state["on"] or MODE == "none":
        return _mix(vocab_logits, pointer_logp, ids)
    if MODE == "pointer":
        pointer_logp = pointer_logp.clone()
        pointer_logp[..., 0] = float("-inf")
        return _mix(vocab_logits, pointer_logp, ids)
    if MODE.startswith("soft:"):  # the null slot's log-probability lowered by C (then renormalised)
        pointer_logp = pointer_logp.clone()
        pointer_logp[..., 0] -= float(MODE[5:])
        return _mix(vocab_logits, pointer_logp.log_softmax(-1), ids)
    mixed = _mix(vocab_logits, pointer_logp, ids)
    present = torch.zeros_like(mixed, dtype=torch.bool)
    present.scatter_(-1, ids[:, None, :].expand(-1, mixed.shape[1], -1), True)
    return mixed.masked_fill(~present, -1e4)


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    # the model's own inference_first_copy_bias (3.5 in models/demo since this round) is ignored:
    # each mode starts from the mixture as trained
    state["on"] = True
    try:
        return _prefill(self, tokens, neighbours, cache)
    finally:
        state["on"] = False


CopyHead.mix = staticmethod(mix)
Retro.prefill = prefill

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
