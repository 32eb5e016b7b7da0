"""Round 19 probe: the shipped first-token lookahead applied to the first RULE tokens of a greedy
generation (each chosen among the top N by one token of lookahead), not the first only; a token
whose step would close a chunk is the argmax. The one-request loop of `retro.generate`, copied
with that change."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.first_token import lookahead_choice  # noqa: E402
from retro.generate import RetroLanguageModel  # noqa: E402
from retro.sampling import sample_token  # noqa: E402

RULE = int(os.environ.get("RULE", "2"))


def _sampled_tokens(self, prompt_ids, params, generator, retrieve, query_from=0):
    model, cfg, m = self.model, self.model.config, self.model.config.chunk_size
    ids, last, cache, query = self.prefilled(
        prompt_ids, retrieve, query_from=query_from, first_copy_bias=params.first_copy_bias
    )
    token = self.first_token(last, cache, params, generator, retrieve is not None)
    said = 1
    while True:
        yield token
        p = cache.pos
        if p >= cfg.max_seq_len:
            return
        ids.append(token)
        neighbours = None
        if retrieve is not None and (p + 1) % m == 0:
            neighbours = self._neighbours(retrieve([query(p + 1)]), 1)
        last = model.decode_step(torch.tensor([token], device=self.device), cache, neighbours)[0]
        last[cfg.pad_id] = float("-inf")
        closes = retrieve is not None and (cache.pos + 1) % m == 0
        if said < RULE and not closes and cache.pos < cfg.max_seq_len and params.temperature == 0:
            token = lookahead_choice(model, last, cache, self.first_candidates)
        else:
            token = sample_token(last, params, generator)
        said += 1


RetroLanguageModel._sampled_tokens = _sampled_tokens

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
