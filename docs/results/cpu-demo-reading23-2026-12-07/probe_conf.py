"""Round 23 probe: record at each first token the decoder's top-5 and the reader's top-5 start ids."""
import atexit, json, os, sys
sys.path.insert(0, "/work/main/docs/results/cpu-demo-reading3-2026-12-03")
import reading_check  # noqa
import torch
from retro.generate import RetroLanguageModel
from retro.span_reader import SpanReader, start_probabilities

READER = SpanReader.load(os.environ["READER"])
W, F = float(os.environ.get("W", "1")), float(os.environ.get("F", "-5"))
LOG = []
orig = RetroLanguageModel._span_biased

def spy(self, last, question_ids, neighbours, weight):
    pad = self.model.config.pad_id
    rows = [[int(t) for t in row if t != pad] for row in neighbours.tolist()]
    q = self.tokenizer.decode(question_ids)
    p = start_probabilities(self.span_reader, q, rows, self.tokenizer, last.shape[0])
    dv, di = last.topk(5); rv, ri = p.topk(5)
    out = orig(self, last, question_ids, neighbours, weight)
    bv, bi = out.topk(5)
    dec = lambda ids: [self.tokenizer.decode([int(i)]) for i in ids]
    LOG.append(dict(q=q, dec=list(zip(dec(di), dv.tolist())), rdr=list(zip(dec(ri), rv.tolist())),
                    noans=1 - float(p.sum()), biased=list(zip(dec(bi), bv.tolist()))))
    return out

RetroLanguageModel._span_biased = spy
atexit.register(lambda: json.dump(LOG, open(os.environ["SPYOUT"], "w")))

def make(model, tokenizer, **kw):
    model.config = model.config.replace(inference_span_weight=W, inference_span_floor=F)
    return RetroLanguageModel(model, tokenizer, span_reader=READER, **kw)

reading_check.RetroLanguageModel = make
if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
