"""Word trigrams of a template, for the tests that check a training source says none of the
evaluation's wordings: lower-case words and numbers, placeholders ({e}, {sentence}) dropped."""

import re


def trigrams(text: str) -> set[tuple[str, ...]]:
    words = [w for w in re.findall(r"[a-z0-9]+|\{\w+\}", text.lower()) if not w.startswith("{")]
    return set(zip(words, words[1:], words[2:], strict=False))
