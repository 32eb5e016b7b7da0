"""Round 16 experiment: `retro train` with the loss of the reading documents (read_prefix: the
question-and-answer documents and conversations) on their answers only (each answer's tokens and
the full stop after it, and end-of-text); every other document keeps its whole loss. The answers
are found as the entity's fact values after a question's "?" or "." (reading world: by title;
facts: the entity's values, with units). Same draws and neighbours as plain `retro train`: only
targets become IGNORE. Arguments: those of `retro train`, with --init-from (whose tokenizer decodes
the tokens to find the answers in)."""

import re
import sys

import numpy as np
import torch

import retro.data as data
from index.facts import entities as fact_entities
from index.reading import world
from retro.tokenizer import Tokenizer

VALUES: dict[str, set[str]] = {}
for e in world()["train"]:
    VALUES.setdefault(e.name, set()).update(e.facts.values())
for e in fact_entities():
    vals = {str(v) for v in e.facts.values()}
    VALUES.setdefault(e.name, set()).update(vals | {v + " square kilometres" for v in vals})

_init, _sequences = data.TrainingData.__init__, data.TrainingData.sequences


def init(self, chunks, config, *args, **kwargs):
    _init(self, chunks, config, *args, **kwargs)
    tok = Tokenizer.load(sys.argv[sys.argv.index("--init-from") + 1])
    pieces = [tok.decode([i], skip_special=False) for i in range(config.vocab_size)]
    eos = 1  # <eos> in every tokenizer retro trains
    keep = np.ones(len(self.stream), dtype=bool)
    m = self.m
    rows = np.nonzero(self.is_reading_row)[0]
    docs = self.doc_of_chunk[rows]
    # a document's chunks are consecutive rows: split the reading rows where the document changes
    bounds = np.flatnonzero(np.diff(docs)) + 1
    found = 0
    for doc_rows in np.split(rows, bounds):
        d = self.doc_of_chunk[doc_rows[0]]
        idx = (doc_rows[:, None] * m + np.arange(m)).reshape(-1)
        ids = self.stream[idx]
        lengths = np.array([0 if i == self.pad_id else len(pieces[i]) for i in ids])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        text = "".join(pieces[i] for i in ids if i != self.pad_id)
        answer = ids == eos
        values = sorted(VALUES.get(chunks.titles[d], ()), key=len, reverse=True)
        if values:
            pattern = re.compile(r"[?.:] (" + "|".join(re.escape(v) for v in values) + r")\.")
            for match in pattern.finditer(text):
                lo, hi = match.start(1) - 1, match.end(1) + 1  # the space before, the full stop after
                answer |= (ends > lo) & (starts < hi)
            found += bool((answer & (ids != eos)).any())
        keep[idx] = answer
    total = len(bounds) + 1 if len(rows) else 0
    print(
        f"answer-only loss: {found} of {total} reading documents have answers found; "
        f"{keep[np.repeat(self.is_reading_row, m)].mean():.1%} of their tokens keep a loss",
        flush=True,
    )
    self.keep_stream = keep


def sequences(self, starts, shifts, step=0, rng_key=(0, 0, 1)):
    batch = _sequences(self, starts, shifts, step, rng_key)
    T, m = self.seq_len, self.m
    keep = np.ones((len(starts), T + 1), dtype=bool)
    for b, (start, shift) in enumerate(zip(starts, shifts, strict=True)):
        lo = start * m
        keep[b, shift:] = self.keep_stream[lo : lo + T + 1 - shift]
    batch.targets[~torch.from_numpy(keep[:, 1:])] = data.IGNORE
    return batch


data.TrainingData.__init__ = init
data.TrainingData.sequences = sequences

if __name__ == "__main__":
    from service.cli import app

    sys.argv[0] = "retro"
    app(prog_name="retro")
