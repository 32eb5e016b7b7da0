"""Closing the leak from encyclopedia leads to held-out facts: the named source `wiki-vital:train`.

The held-out countries and elements of `index.facts` must be unknown to a model trained on the
demo's corpus, yet Wikipedia's vital-article leads include their own articles ("Algeria ... its
capital is Algiers"). This module owns the filter: `wiki-vital:train` is `wiki-vital` without every
lead whose title names a held-out entity (or a twin of one) as a whole word, e.g. "Algeria",
"History of Algeria", "Constantine, Algeria" (98 of 10,033 leads). What it cannot remove, and
reports say so: other leads that mention a held-out fact in passing. It never imports `retro`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from index.corpus import Document, NamedSource
from index.facts import TWINS, entities, is_heldout
from index.wiki_vital import read_wiki_vital, wiki_vital_path


@lru_cache(maxsize=1)
def heldout_title_pattern() -> re.Pattern:
    """A title naming any held-out entity, or a twin of one, as a whole word."""
    names = {e.name for e in entities() if is_heldout(e.key)}
    for pair in TWINS:
        if any(name in names for name in pair):
            names.update(pair)
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def without_heldout_leads(documents: Iterable[Document]) -> Iterator[Document]:
    pattern = heldout_title_pattern()
    for document in documents:
        if not pattern.search(document.title or ""):
            yield document


SOURCES = {
    "wiki-vital:train": NamedSource(
        read=lambda skipped: without_heldout_leads(read_wiki_vital(skipped)), check=wiki_vital_path
    )
}
