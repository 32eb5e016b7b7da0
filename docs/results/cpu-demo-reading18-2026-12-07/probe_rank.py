"""Round 18 probe: where the answer's first token ranks in the first token's distribution (the
shipped rule), per item; written to RANKS (jsonl: prompt, top-20 token ids and log-probs)."""

import json
import os
import sys

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.generate import RetroLanguageModel  # noqa: E402
from retro.model import Retro  # noqa: E402

RANKS = os.environ.get("RANKS", "ranks.jsonl")
open(RANKS, "w").close()  # one run per file: each generation appends its line below
_prefill = Retro.prefill
_generate = RetroLanguageModel.generate
state = {"prompt": None}


def prefill(self, tokens, neighbours=None, cache=None, last_copy_bias=0.0):
    logp, cache = _prefill(self, tokens, neighbours, cache, last_copy_bias)
    if state["prompt"] is not None:
        top = logp[0, -1].topk(20)
        with open(RANKS, "a") as out:  # appended: one line per generation
            out.write(
                json.dumps(
                    {
                        "prompt": state["prompt"],
                        "ids": top.indices.tolist(),
                        "logp": [round(v, 3) for v in top.values.tolist()],
                    }
                )
                + "\n"
            )
        state["prompt"] = None
    return logp, cache


def generate(self, prompt, *args, **kwargs):
    state["prompt"] = prompt
    return _generate(self, prompt, *args, **kwargs)


Retro.prefill = prefill
RetroLanguageModel.generate = generate

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
