"""Probe: when a position's own token is punctuation (no letter or digit: "?", ".", "|"), its
n-gram match at offset 0 is dropped during prefill (so the first answer token is not pointed at
whatever follows a "?" or "." in a neighbour); the model's own first-token copy bias applies.
MODE=drop0 (environment) as described; MODE=none: unchanged.

    cd /work/exp && MODE=drop0 PYTHONPATH=/work/main python probe_punct.py index-serve dev \
        /work/main/models/demo --query-tokens 96 --mode lexical-titled --dump r17/dev-punct

(the third round's reading_check.py with the patch; `models/demo` with its own first-token copy bias,
3.5, which the patch keeps)."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.checkpoint import load_checkpoint  # noqa: E402
from retro.copy_head import CopyHead  # noqa: E402
from retro.model import Retro  # noqa: E402

MODE = os.environ.get("MODE", "drop0")
_match = CopyHead.match
_prefill = Retro.prefill
state = {"on": False, "punct": None}

_, tok, _ = load_checkpoint("/work/main/models/demo")
punct = torch.zeros(tok.vocab_size, dtype=torch.bool)
for i in range(tok.vocab_size):
    text = tok.decode([i]).strip()
    punct[i] = bool(text) and not any(c.isalnum() for c in text)
print("punctuation tokens:", int(punct.sum()), file=sys.stderr)


def match(self, query_context, key_context, scale=None):
    if not state["on"] or MODE == "none":
        return _match(self, query_context, key_context, scale)
    full = _match(self, query_context, key_context, scale)
    q0 = query_context[..., :1]
    only0 = _match_offset0(self, q0, key_context[..., :1], None if scale is None else scale[..., :1])
    is_punct = punct.to(q0.device)[q0[..., 0]]  # (N, Tq)
    return full - only0 * is_punct[..., None].to(full.dtype)


def _match_offset0(self, q0, k0, scale):
    same = (q0[:, :, None, :] == k0[:, None, :, :]) & (q0 != self.pad_id)[:, :, None, :]
    bonus = self.match_bonus[:1] if scale is None else (self.match_bonus[:1] * scale)[:, :, None, :]
    return (same.to(self.match_bonus.dtype) * bonus).sum(-1)


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    state["on"] = True
    try:
        return _prefill(self, tokens, neighbours, cache, last_copy_bias)
    finally:
        state["on"] = False


CopyHead.match = match
Retro.prefill = prefill

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
