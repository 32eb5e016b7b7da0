"""Round 16 inference probe: the copy head's n-gram bonus for the last token alone (offset 0)
times ALPHA (environment); every other offset as trained. Runs reading_check.py's main."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpu-demo-reading3-2026-12-03"))
import reading_check  # noqa: E402

ALPHA = float(os.environ.get("ALPHA", "1"))
_load = reading_check.load_checkpoint


def load_scaled(run):
    model, tokenizer, extra = _load(run)
    model.copy_head.match_bonus.data[0] *= ALPHA
    return model, tokenizer, extra


reading_check.load_checkpoint = load_scaled

if __name__ == "__main__":
    reading_check.main(reading_check.arguments().parse_args())
