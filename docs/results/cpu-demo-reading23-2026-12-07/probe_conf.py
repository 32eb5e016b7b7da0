"""Round 23 probe: record at each first token the decoder's top 5, the reader's top 5 start ids and
the biased top 5 (`$SPYOUT`), running reading_check with the reader from `$READER` at `$W`, `$F`.

As run (2026-12-07 22:25 UTC, at commit 8a170f4), `RetroLanguageModel._span_biased` returned the
biased log-probabilities alone; since the span follower it returns (log-probabilities, span), and
`spy` below passes that on and records the first.
"""

import atexit
import json
import os
import sys

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dev23  # noqa: E402  (the reader from $READER at $W, $F; $B unset: no follow, as run)
import reading_check  # noqa: E402

from retro.generate import RetroLanguageModel  # noqa: E402
from retro.span_reader import start_probabilities  # noqa: E402

LOG = []
original = RetroLanguageModel._span_biased


def spy(self, last, question_ids, neighbours, weight):
    pad = self.model.config.pad_id
    rows = [[int(t) for t in row if t != pad] for row in neighbours.tolist()]
    q = self.tokenizer.decode(question_ids)
    p = start_probabilities(self.span_reader, q, rows, self.tokenizer, last.shape[0])
    out = original(self, last, question_ids, neighbours, weight)
    biased = out[0] if isinstance(out, tuple) else out

    def top(values):
        v, i = values.topk(5)
        return [(self.tokenizer.decode([int(t)]), float(x)) for t, x in zip(i, v, strict=True)]

    LOG.append(dict(q=q, dec=top(last), rdr=top(p), noans=1 - float(p.sum()), biased=top(biased)))
    return out


def dump() -> None:
    with open(os.environ["SPYOUT"], "w") as f:
        json.dump(LOG, f)


RetroLanguageModel._span_biased = spy
atexit.register(dump)


reading_check.RetroLanguageModel = dev23.make
if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
