"""Round 20 probe: the copy head's matches (n-gram, bag, neighbour) compare tokens case- and
space-folded ("Born" == " born"), weights and everything else as trained. Inference only."""

import os
import sys

import torch

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro import copy_head as ch  # noqa: E402
from retro.tokenizer import Tokenizer  # noqa: E402

WHICH = set(os.environ.get("FOLD", "match,bag,neighbour").split(","))
tok = Tokenizer.load("/work/main/models/demo")
first: dict[str, int] = {}
canon = []
for i in range(tok.vocab_size):
    s = tok.decode([i], skip_special=False).strip().lower()
    key = s if s else f"<{i}>"
    canon.append(first.setdefault(key, i))
CANON = torch.tensor(canon)
print(f"folded vocabulary: {len(first)} classes of {tok.vocab_size}", file=sys.stderr)
C = lambda x: CANON.to(x.device)[x]  # noqa: E731

_match, _bag, _nbag = ch.CopyHead.match, ch.CopyHead.bag, ch.CopyHead.neighbour_bag


def match(self, query_context, key_context, scale=None):
    if "match" not in WHICH:
        return _match(self, query_context, key_context, scale)
    query_context = query_context[..., : self.match_tokens]
    same = C(query_context)[:, :, None, :] == C(key_context)[:, None, :, :]
    same &= (query_context != self.pad_id)[:, :, None, :]
    bonus = self.match_bonus if scale is None else (self.match_bonus * scale)[:, :, None, :]
    return (same.to(self.match_bonus.dtype) * bonus).sum(-1)


def bag(self, query_context, ids):
    if "bag" not in WHICH:
        return _bag(self, query_context, ids)
    import torch.nn.functional as F

    W, r = self.bag_window, self.retrieved_len
    q = query_context[..., :W]
    weight = self.bag_weight[q] * (q != self.pad_id)
    same = (C(q)[..., None] == C(ids)[:, None, None, :]).to(weight.dtype)
    salience = torch.einsum("ntws,ntw->nts", same, weight)
    N, Tq, S = salience.shape
    k = S // r
    padded = F.pad(salience.view(N, Tq, k, r), (W, 0))
    score = sum(self.bag_distance[d] * padded[..., W - 1 - d : W - 1 - d + r] for d in range(W))
    return score.reshape(N, Tq, S)


def neighbour_bag(self, query_context, ids):
    if "neighbour" not in WHICH:
        return _nbag(self, query_context, ids)
    W, r = self.bag_window, self.retrieved_len
    q = query_context[..., :W]
    weight = ch.NEIGHBOUR_SALIENCE_SCALE * self.neighbour_weight[q] * (q != self.pad_id)
    N, S = ids.shape
    k = S // r
    present = (C(q)[..., None, None] == C(ids).reshape(N, 1, 1, k, r)).any(dim=-1)
    score = torch.einsum("ntwk,ntw->ntk", present.to(weight.dtype), weight)
    return score.repeat_interleave(r, dim=-1)


ch.CopyHead.match, ch.CopyHead.bag, ch.CopyHead.neighbour_bag = match, bag, neighbour_bag

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
