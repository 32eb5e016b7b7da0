"""What the match gate learned: its log-scales at a prompt's last position (where the first answer
token is chosen), averaged per item kind, on dev, served settings. Runs reading_check.py (argv) with
two hooks; prints a table: columns = the n-gram offsets 0..7, bag, neighbour match."""

import collections
import runpy
import sys
from pathlib import Path

import torch

from index.reading import evaluation_set
from retro import generate as gen_mod
from retro import model as model_mod

kind_of = {i.prompt: i.kind for i in evaluation_set("dev").items}
last_h = {}
records = collections.defaultdict(list)
orig_run = model_mod.Retro._run_sequence


def run_sequence(self, *a, **k):
    states = orig_run(self, *a, **k)
    last_h["h"] = states.h[:, -1:].detach()
    return states


model_mod.Retro._run_sequence = run_sequence
orig_prefilled = gen_mod.RetroLanguageModel.prefilled


def prefilled(self, prompt_ids, retrieve, *a, **k):
    out = orig_prefilled(self, prompt_ids, retrieve, *a, **k)
    gates = self.model.copy_head.gates(last_h["h"])
    if gates is not None:
        prompt = self.tokenizer.decode(prompt_ids)
        kind = kind_of.get(prompt) or kind_of.get(prompt.strip()) or "other"
        records[kind].append(gates[0, 0].log())
    return out


gen_mod.RetroLanguageModel.prefilled = prefilled
READING_CHECK = Path(__file__).parents[1] / "cpu-demo-reading3-2026-12-03" / "reading_check.py"
sys.argv = ["reading_check.py"] + sys.argv[1:]
try:
    runpy.run_path(str(READING_CHECK), run_name="__main__")
finally:
    print("kind | n | mean log-scale: offsets 0..7, bag, neighbour")
    for kind, rows in sorted(records.items()):
        m = torch.stack(rows).mean(0)
        print(kind, len(rows), " ".join(f"{v:+.2f}" for v in m.tolist()))
