"""Closing the leak from encyclopedia leads to held-out facts: the named sources `wiki-vital:train`
and, its complement, `wiki-vital:heldout` / `:dev` / `:test`.

The held-out countries and elements of `index.facts` must be unknown to a model trained on the
demo's corpus, yet Wikipedia's vital-article leads include their own articles ("Algeria ... its
capital is Algiers"). This module owns the filter: `wiki-vital:train` is `wiki-vital` without every
lead whose title names a held-out entity (or a twin of one) as a whole word, e.g. "Algeria",
"History of Algeria", "Constantine, Algeria" (98 of 10,033 leads). What it cannot remove, and
reports say so: other leads that mention a held-out fact in passing.

The 98 dropped leads are general text that neither training nor the demo's serving index holds:
`wiki-vital:heldout`, halved like the held-out facts into `wiki-vital:dev` and `wiki-vital:test`
by the part (`index.facts.heldout_part`) of the entity their title names first. `retro eval`
scores bits per byte on them by neighbour overlap. It never imports `retro`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache

from index.corpus import Document, NamedSource
from index.facts import TWINS, entities, heldout_part, is_heldout
from index.wiki_vital import read_wiki_vital, wiki_vital_path

LEAD_PARTS = ("heldout", "dev", "test")


@lru_cache(maxsize=1)
def heldout_names() -> dict[str, str]:
    """Each held-out entity's name, and both names of a twin pair holding one -> its entity key."""
    keys = {e.name: e.key for e in entities() if is_heldout(e.key)}
    for pair in TWINS:
        held = [keys[name] for name in pair if name in keys]
        if held:
            for name in pair:
                keys.setdefault(name, held[0])
    return keys


@lru_cache(maxsize=1)
def heldout_title_pattern() -> re.Pattern:
    """A title naming any held-out entity, or a twin of one, as a whole word."""
    alternatives = "|".join(re.escape(n) for n in sorted(heldout_names(), key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def without_heldout_leads(documents: Iterable[Document]) -> Iterator[Document]:
    pattern = heldout_title_pattern()
    for document in documents:
        if not pattern.search(document.title or ""):
            yield document


def heldout_lead_part(title: str | None) -> str | None:
    """The part, "dev" or "test", of the held-out entity a title names first (the longest name at
    the leftmost match); None for a title naming none."""
    match = heldout_title_pattern().search(title or "")
    return heldout_part(heldout_names()[match.group(0)]) if match else None


def heldout_leads(documents: Iterable[Document], part: str = "heldout") -> Iterator[Document]:
    """The leads `without_heldout_leads` drops ("heldout"), or those of one part ("dev", "test")."""
    if part not in LEAD_PARTS:
        raise ValueError(f"unknown held-out lead part {part!r}; parts: {', '.join(LEAD_PARTS)}")
    for document in documents:
        found = heldout_lead_part(document.title)
        if found is not None and part in ("heldout", found):
            yield document


def _heldout_source(part: str) -> NamedSource:
    return NamedSource(
        read=lambda skipped: heldout_leads(read_wiki_vital(skipped), part), check=wiki_vital_path
    )


SOURCES = {
    "wiki-vital:train": NamedSource(
        read=lambda skipped: without_heldout_leads(read_wiki_vital(skipped)), check=wiki_vital_path
    ),
    **{f"wiki-vital:{part}": _heldout_source(part) for part in LEAD_PARTS},
}
