"""How an answer is scored, and how sure a score is: first span, containment, Wilson intervals.

This module owns the one rule every accuracy in the project is reported by (docs/design.md,
"Honest evaluation"):

- `answer_first(answer, generated)`: the generation *starts* with the answer. Leading whitespace,
  punctuation and one leading article ("the", "a", "an") are skipped; the comparison ignores case
  and runs of whitespace; the character after the answer must not be a letter or a digit (so "H"
  does not match "Helium", "19" does not match "1943").
- `answer_contained(answer, generated)`: the answer occurs anywhere, on word boundaries. Reported
  as a second column only: it credits a model that lists every continent.
- `answer_in_prompt(answer, prompt)`: a prompt that already holds the answer earns no credit.
- `wilson_interval(k, n)`: the 95% Wilson score interval of a proportion (sound at 0/n and n/n,
  where the normal approximation is not).

It imports nothing from the model, so reports, benchmarks and tests share it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_PUNCTUATION = re.compile(r"^[\s\"'`(\[{:;,.!?*\-]*")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
Z_95 = 1.959963984540054


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def answer_first(answer: str, generated: str) -> bool:
    """True when `generated`, after whitespace, punctuation and a leading article, starts with
    `answer` and the next character is not a letter or digit."""
    want = _fold(answer)
    if not want:
        return False
    text = _PUNCTUATION.sub("", _fold(generated), count=1)
    # with the article skipped, and as it stands (an answer may itself start with "The")
    for candidate in (_ARTICLE.sub("", text, count=1), text):
        if candidate.startswith(want):
            rest = candidate[len(want) :]
            if not rest or not rest[0].isalnum():
                return True
    return False


def answer_contained(answer: str, generated: str) -> bool:
    """True when `answer` occurs in `generated` on word boundaries (case and spacing ignored)."""
    want = _fold(answer)
    if not want:
        return False
    pattern = r"(?<![0-9a-z])" + re.escape(want) + r"(?![0-9a-z])"
    return re.search(pattern, _fold(generated)) is not None


def answer_in_prompt(answer: str, prompt: str) -> bool:
    return answer_contained(answer, prompt)


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for k successes in n trials; (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Proportion:
    """k of n, with its Wilson 95% interval: what every accuracy in a report is."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def __str__(self) -> str:
        if not self.n:
            return "n/a (0)"
        low, high = self.interval
        return f"{self.value:.1%} ({self.k}/{self.n}; {low:.1%}-{high:.1%})"

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"k": self.k, "n": self.n, "value": self.value, "low": low, "high": high}
