"""Round 19 probe: the lookahead's step beyond each candidate drawn with the first token's copy
bias too (full forward passes over prompt + candidate, `Retro.prefill(last_copy_bias=)`), instead
of the model's own mixture. Otherwise the shipped rule (top N = 5, one token)."""

import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

import retro.generate as generate  # noqa: E402
from retro.model import Retro  # noqa: E402

_prefill = Retro.prefill
seen = {}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    if tokens.shape[0] == 1:
        seen["tokens"], seen["neighbours"], seen["bias"] = tokens, neighbours, last_copy_bias
    return _prefill(self, tokens, neighbours, cache, last_copy_bias)


@torch.no_grad()
def lookahead_choice(model, first, cache, candidates):
    top = first.topk(candidates)
    tokens, nb = seen["tokens"], seen["neighbours"]
    seqs = torch.cat([tokens.expand(candidates, -1), top.indices[:, None]], dim=1)
    nb = None if nb is None else nb.expand(candidates, *nb.shape[1:])
    after = _prefill(model, seqs, nb, None, seen["bias"])[0][:, -1]
    after[:, model.config.pad_id] = float("-inf")
    return int(top.indices[(top.values + after.max(-1).values).argmax()])


Retro.prefill = prefill
generate.lookahead_choice = lookahead_choice

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
