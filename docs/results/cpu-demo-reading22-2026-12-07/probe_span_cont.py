"""Round 22 probe: the span reader's whole span, not only its start. As dev_span.py (the reader's
first-token bias at weight $W), and after the first token, while the answer so far is a prefix of
the reader's best span (start + end logits, at most 16 word pieces, over the prompt's last chunk's
neighbours), the span's next decoder token gets $B nats added. Single-request decoding only
(RetroLanguageModel's loop), as reading_check runs it."""

import os
import sys
from bisect import bisect_right

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402
import torch  # noqa: E402

import retro.generate as gen  # noqa: E402
from retro.generate import RetroLanguageModel  # noqa: E402
from retro.span_reader import SpanReader, token_texts  # noqa: E402

READER = SpanReader.load(os.environ["READER"])
W, F, B = float(os.environ.get("W", "1")), float(os.environ.get("F", "-5")), float(os.environ.get("B", "3"))
state = {"span": [], "said": []}
_prefilled = RetroLanguageModel.prefilled
_first_token = RetroLanguageModel.first_token
_sample = gen.sample_token


def _last_at_or_before(starts, char):  # retro.span_reader's rule for the decoder token holding char
    return max(0, bisect_right(starts, char) - 1)


@torch.no_grad()
def best_span(lm, question, rows):
    owners = [token_texts(lm.tokenizer, ids) for ids in rows]
    enc = READER.encode([question] * len(rows), [t for t, _ in owners])
    s, e = READER(enc)
    best, span = float("-inf"), []
    for r, (ids, (_, starts)) in enumerate(zip(rows, owners, strict=True)):
        if not ids:
            continue
        ctx = torch.nonzero(enc.context[r]).flatten().tolist()[1:]
        for a in ctx:
            for b in ctx:
                if b < a or b - a > 15:
                    continue
                score = float(s[r, a] + e[r, b])
                if score > best:
                    ka = _last_at_or_before(starts, enc.offsets[r][a][0])
                    kb = _last_at_or_before(starts, enc.offsets[r][b][1] - 1)
                    best, span = score, ids[ka : kb + 1]
    null = float(s[:, 0].mean() + e[:, 0].mean())
    return span if best > null else []


def prefilled(self, prompt_ids, retrieve, *a, **kw):
    state["nb"] = None
    out = _prefilled(self, prompt_ids, retrieve, *a, **kw)  # calls _neighbours once, for the prompt
    state["span"], state["said"] = [], []
    nb = state["nb"]
    if retrieve is not None and nb is not None:
        pad = self.model.config.pad_id
        rows = [[int(t) for t in row if t != pad] for row in nb.tolist()]
        query_from = kw.get("query_from", 0)
        state["span"] = best_span(self, self.tokenizer.decode(prompt_ids[query_from:]), rows)
    return out


_neighbours = RetroLanguageModel._neighbours


def neighbours(self, retrieved, n):
    out = _neighbours(self, retrieved, n)
    state["nb"] = out[-1]
    return out


def first_token(self, *a, **kw):
    token = _first_token(self, *a, **kw)
    state["said"] = [token]
    return token


def sample_token(last, params, generator):
    said, span = state["said"], state["span"]
    i = len(said)
    if span and 0 < i < len(span) and said == span[:i]:
        last = last.clone()
        last[span[i]] += B
    token = _sample(last, params, generator)
    said.append(token)
    return token


def make(model, tokenizer, **kw):
    model.config = model.config.replace(inference_span_weight=W, inference_span_floor=F)
    return RetroLanguageModel(model, tokenizer, span_reader=READER, **kw)


RetroLanguageModel.prefilled = prefilled
RetroLanguageModel._neighbours = neighbours
RetroLanguageModel.first_token = first_token
gen.sample_token = sample_token
reading_check.RetroLanguageModel = make

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
