"""Round 18 inference probe: the first token chosen among the first distribution's top N by a
short greedy lookahead. Each candidate is extended greedily by STEPS more tokens (the prompt's own
neighbours; no chunk closes that soon) and scored by its first token's log-probability (the
shipped rule's distribution) plus the extension's; the best candidate is said first, the rest of
the generation as usual. N=TOP (default 5), STEPS (default 3)."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.generate import RetroLanguageModel  # noqa: E402
from retro.model import Retro  # noqa: E402

TOP = int(os.environ.get("TOP", "5"))
STEPS = int(os.environ.get("STEPS", "3"))
_prefill = Retro.prefill
_prefilled = RetroLanguageModel.prefilled
seen = {}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    seen["tokens"], seen["neighbours"] = tokens, neighbours
    return _prefill(self, tokens, neighbours, cache, last_copy_bias)


@torch.no_grad()
def prefilled(self, *args, **kwargs):
    ids, last, cache, query = _prefilled(self, *args, **kwargs)
    model, tokens, neighbours = self.model, seen["tokens"], seen["neighbours"]
    top = last.topk(TOP)
    seqs = torch.cat([tokens.expand(TOP, -1), top.indices[:, None]], dim=1)
    score = top.values.clone()
    nb = None if neighbours is None else neighbours.expand(TOP, *neighbours.shape[1:])
    for _ in range(STEPS):
        if seqs.shape[1] > model.config.max_seq_len:
            break
        step = model.forward(seqs, nb)[:, -1]
        step[:, model.config.pad_id] = float("-inf")
        best = step.max(-1)
        score += best.values
        seqs = torch.cat([seqs, best.indices[:, None]], dim=1)
    chosen = top.indices[score.argmax()]
    last = last.clone()
    last[chosen] = last.max() + 1.0  # greedy now says the chosen candidate
    return ids, last, cache, query


Retro.prefill = prefill
RetroLanguageModel.prefilled = prefilled

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
