"""Inference probe: the copy head's n-gram match ignores query tokens in a stop set.
STOP env: 'punct' (tokens made only of punctuation/whitespace) or 'punct+func' (also the most
frequent function words). Runs reading_check.py with the rest of argv."""

import os
import re
import runpy
import sys
from pathlib import Path

import torch

from retro import copy_head

STOP = os.environ.get("STOP", "punct")
_orig = copy_head.CopyHead.match
_cache = {}


def stop_ids(vocab_size):
    if vocab_size not in _cache:
        import json

        with open(os.environ.get("TOKENIZER", "models/demo/tokenizer.json")) as f:
            tok = json.load(f)
        vocab = tok["model"]["vocab"]
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        for s, i in vocab.items():
            text = s.replace("Ġ", " ").replace("Ċ", "\n")
            if text.strip() == "" or re.fullmatch(r"[\s\W_]+", text):
                mask[i] = True
        if STOP == "punct+func":
            for w in [
                "the",
                "a",
                "an",
                "of",
                "in",
                "on",
                "at",
                "to",
                "is",
                "was",
                "were",
                "by",
                "as",
                "and",
                "or",
                "for",
                "with",
                "from",
            ]:
                for s in (w, "Ġ" + w):
                    if s in vocab:
                        mask[vocab[s]] = True
        _cache[vocab_size] = mask
        print("stop tokens:", int(mask.sum()), file=sys.stderr)
    return _cache[vocab_size]


def match(self, query_context, key_context, scale=None):  # scale: the match gate (off in the probed model)
    query_context = query_context[..., : self.match_tokens]
    same = query_context[:, :, None, :] == key_context[:, None, :, :]
    stop = stop_ids(self.bag_weight.shape[0])[query_context.clamp_min(0)]
    same &= ((query_context != self.pad_id) & ~stop)[:, :, None, :]
    bonus = self.match_bonus if scale is None else (self.match_bonus * scale)[:, :, None, :]
    return (same.to(self.match_bonus.dtype) * bonus).sum(-1)


copy_head.CopyHead.match = match
READING_CHECK = Path(__file__).parents[1] / "cpu-demo-reading3-2026-12-03" / "reading_check.py"
sys.argv = ["reading_check.py"] + sys.argv[1:]
runpy.run_path(str(READING_CHECK), run_name="__main__")
