"""Round 23 dev driver: reading_check with the span reader from $READER at weight $W, floor $F and
span follow $B (nats; 0 off) -- the product code path, RetroLanguageModel's own."""

import os
import sys

sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa: E402

from retro.generate import RetroLanguageModel  # noqa: E402
from retro.span_reader import SpanReader  # noqa: E402

READER = SpanReader.load(os.environ["READER"])
W, F = float(os.environ.get("W", "1")), float(os.environ.get("F", "-5"))
B = float(os.environ.get("B", "0"))


def make(model, tokenizer, **kw):
    model.config = model.config.replace(
        inference_span_weight=W, inference_span_floor=F, inference_span_follow=B
    )
    return RetroLanguageModel(model, tokenizer, span_reader=READER, **kw)


reading_check.RetroLanguageModel = make

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
