"""Round 18 inference probe: context-aware decoding (Shi et al. 2023) at the first token.

The first generated token is drawn from (1 + A) log p(. | prompt, neighbours) - A log p(. | prompt),
renormalised: what the neighbours add over what the model would say without them. CAD=A, ALL=1
applies it at every prefill position the first token comes from (only the last one matters)."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.model import Retro  # noqa: E402

ALPHA = float(os.environ.get("CAD", "1"))
_prefill = Retro.prefill


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    logp, cache = _prefill(self, tokens, neighbours, cache, last_copy_bias)
    if neighbours is None or ALPHA == 0:
        return logp, cache
    with torch.no_grad():
        off = self.forward(tokens[:, -self.config.max_seq_len :], None)[:, -1]
    last = ((1 + ALPHA) * logp[:, -1] - ALPHA * off).log_softmax(-1)
    logp = logp.clone()
    logp[:, -1] = last
    return logp, cache


Retro.prefill = prefill

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
