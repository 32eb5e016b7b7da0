"""Completion prompts for training: the reading set's relations said as a sentence that stops where
the value follows, in wordings of our own (the span reader's training, `index.span_examples`).

The span reader of 2026-12-07 was trained on questions only. Asked a completion ("The mentor of X
was") it pointed at the value 75% of the time on dev, but at a word-for-word prefix of a table it
pointed at the wrong cell (it had never read a prompt that is the passage itself), so its weight
had to stay low enough for the decoder to keep the prefixes. This module gives it completions:

- **the passage's own prefixes** (`index.reading.Passage.prefixes`, training families only): the
  passage from its start to the value, which is what a word-for-word prefix prompt is;
- **completion paraphrases** (`COMPLETIONS`, written here): two or three per relation, each checked
  by `index.reading_paraphrase.check_template`, so none shares a word trigram with a held-out
  question form or reworded prompt that the training forms lack. The held-out reworded prompts
  stay unseen; what is trained is the structure "a sentence that stops where the value goes".

Pure functions of their arguments; no documents, no named source (no decoder trains on these). It
never imports `retro`.
"""

from __future__ import annotations

import random
from functools import cache

from index.reading_paraphrase import check_template
from index.reading_world import KIND_BY_NAME

# (kind, relation) -> completion prompts ending where the value follows
COMPLETIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "born"): ("Records give {e}'s year of birth as", "{e}, year of birth:",
                         "The birth of {e} took place in"),
    ("person", "hometown"): ("{e} was raised in", "The town {e} came from is",
                             "{e} spent the early years in"),
    ("person", "trade"): ("The job {e} held was that of a", "{e} was by trade a",
                          "In working life {e} served as a"),
    ("person", "mentor"): ("{e} was trained by", "The teacher who trained {e} was", "{e} studied under"),
    ("town", "founded"): ("{e} first opened in", "The founding year of {e} was",
                          "{e} has existed since"),
    ("town", "mayor"): ("The current mayor of {e}:", "Running {e} as mayor is",
                        "In {e}, the post of mayor belongs to"),
    ("town", "known_for"): ("{e} draws visitors with its", "People know {e} best for its",
                            "What made {e} well known is its"),
    ("town", "population"): ("The population of {e} stands at", "{e} is home to",
                             "{e} counts a population of"),
    ("company", "founded"): ("{e} first opened in", "{e} started trading in",
                             "The founding year of {e} was"),
    ("company", "founder"): ("{e} was set up by", "The founder of {e} was", "{e} was created by"),
    ("company", "product"): ("{e} produces", "{e} sells mostly", "{e} is a maker of"),
    ("company", "headquarters"): ("{e} is based in", "The offices of {e} are in",
                                  "{e} is headquartered in"),
    ("species", "food"): ("{e} survives on a diet of", "For food, {e} depends on", "{e} feeds mostly on"),
    ("species", "habitat"): ("{e} is usually found in", "The habitat of {e}:",
                             "{e} makes its home in"),
    ("species", "length"): ("{e} can reach a length of", "Fully grown, {e} is about",
                            "Adult size, {e}:"),
    ("species", "discovered"): ("{e} got its first description in", "The first record of {e} dates from",
                                "Naturalists first saw {e} in"),
}  # fmt: skip


@cache
def completions(kind: str, relation: str) -> tuple[str, ...]:
    """The completion prompts of one relation, each checked by `check_template` (ValueError if one
    says what a held-out wording says)."""
    rel = next(r for r in KIND_BY_NAME[kind].relations if r.name == relation)
    for template in COMPLETIONS[(kind, relation)]:
        check_template(template, rel)
    return COMPLETIONS[(kind, relation)]


def complete_paraphrase(kind: str, relation: str, name: str, rng: random.Random) -> str:
    return rng.choice(completions(kind, relation)).format(e=name)
