"""Probe: with the first token's copy bias, the pointer at the prompt's last position may not point
at a neighbour token that the prompt itself holds (a restatement: the entity's name, " of", "?"),
before the pointer is renormalised; the vocabulary's share is untouched. MODE=all: every prompt
token; MODE=none: the shipped rule alone.

    cd /work/exp && MODE=all PYTHONPATH=/work/main python probe_noecho.py index-serve dev \
        /work/main/models/demo --query-tokens 96 --mode lexical-titled --dump r17/dev-noecho-all

(the third round's reading_check.py with the patch; `models/demo` with its own first-token copy bias,
3.5, which the patch keeps)."""

import os
import sys

from einops import rearrange

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.copy_head import CopyHead  # noqa: E402
from retro.model import Retro  # noqa: E402

MODE = os.environ.get("MODE", "all")
_prefill = Retro.prefill
_chunked_pointer = CopyHead.chunked_pointer
_lower_null = CopyHead.lower_null
state = {"tokens": None, "ids": None}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    state["tokens"] = tokens  # the prompt, for the last position's rule
    try:
        return _prefill(self, tokens, neighbours, cache, last_copy_bias)
    finally:
        state["tokens"] = state["ids"] = None


def chunked_pointer(self, h, neighbours, *args, **kwargs):
    pointer, ids = _chunked_pointer(self, h, neighbours, *args, **kwargs)
    state["ids"] = rearrange(ids, "(b l) s -> b l s", b=h.shape[0])[:, -1]  # the last chunk's: (B, S)
    state["pad_id"] = self.pad_id
    return pointer, ids


def lower_null(pointer_logp, bias):
    """`Retro._log_probs` calls this for the prompt's last position only (the row of the last chunk)."""
    if MODE != "none" and state["tokens"] is not None and state["ids"] is not None:
        ids, prompt = state["ids"], state["tokens"]
        echoed = (ids[:, :, None] == prompt[:, None, :]).any(-1) & (ids != state["pad_id"])
        pointer_logp = pointer_logp.clone()
        pointer_logp[:, 1:] = pointer_logp[:, 1:].masked_fill(echoed, float("-inf"))
        pointer_logp = pointer_logp.log_softmax(-1)
    return _lower_null(pointer_logp, bias)


Retro.prefill = prefill
CopyHead.chunked_pointer = chunked_pointer
CopyHead.lower_null = staticmethod(lower_null)

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
