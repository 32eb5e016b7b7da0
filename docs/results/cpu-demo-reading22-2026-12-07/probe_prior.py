"""Round 22 probe: the first token's lookahead score plus BETA x the model's own log-probability
of the candidate without neighbours (its prior over what kind of answer the prompt asks for)."""

import os
import sys

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402
import torch  # noqa: E402

import retro.generate as generate_module  # noqa: E402
from retro.first_token import branched_cache  # noqa: E402
from retro.model import Retro  # noqa: E402

BETA = float(os.environ.get("BETA", "0.5"))
_prefill = Retro.prefill
state = {"without": None}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    out = _prefill(self, tokens, neighbours, cache, last_copy_bias)
    if neighbours is not None:
        with torch.no_grad():
            logp, _ = _prefill(self, tokens, None, None, 0.0)
        state["without"] = logp[0, -1]
    else:
        state["without"] = None
    return out


@torch.no_grad()
def lookahead_choice(model, first, cache, candidates):
    top = first.topk(min(candidates, first.numel()))
    after = model.decode_step(top.indices, branched_cache(cache, len(top.indices)))
    after[:, model.config.pad_id] = float("-inf")
    score = top.values + after.max(dim=-1).values
    if state["without"] is not None:
        score = score + BETA * state["without"][top.indices]
    return int(top.indices[score.argmax()])


Retro.prefill = prefill
generate_module.lookahead_choice = lookahead_choice

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
