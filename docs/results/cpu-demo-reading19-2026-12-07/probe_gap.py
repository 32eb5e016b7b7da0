"""Round 19 probe: records, for every greedy first token the lookahead chose, the candidates'
log-probabilities, their lookahead scores and the chosen one (appended to GAPS, one JSON line per
generation, in generation order), then runs reading_check as usual."""

import json
import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

import retro.generate as generate  # noqa: E402
from retro.first_token import branched_cache  # noqa: E402

OUT = open(os.environ.get("GAPS", "gaps.jsonl"), "w")  # noqa: SIM115 (open for the whole run)


@torch.no_grad()
def lookahead_choice(model, first, cache, candidates):
    top = first.topk(min(candidates, first.numel()))
    after = model.decode_step(top.indices, branched_cache(cache, len(top.indices)))
    after[:, model.config.pad_id] = float("-inf")
    best = after.max(dim=-1)
    score = top.values + best.values
    chosen = int(score.argmax())
    OUT.write(
        json.dumps(
            {
                "logp": top.values.tolist(),
                "next": best.values.tolist(),
                "ids": top.indices.tolist(),
                "chosen": chosen,
            }
        )
        + "\n"
    )
    OUT.flush()
    return int(top.indices[chosen])


generate.lookahead_choice = lookahead_choice

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
