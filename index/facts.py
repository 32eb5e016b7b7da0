"""Fact documents and fact pairs rendered from structured data (countryinfo, mendeleev).

This module owns turning ~250 countries and 118 elements into (1) documents, three phrasings per
entity as separate documents (doc_ids `facts/<kind>/<slug>/p1..p3`), so that a fact recurs across
documents and a model can learn to copy it from a neighbour, and (2) `FactPair`s (a question-style
prompt, a completion-style prompt and the short answer) for evaluation. A deterministic split by
entity marks ~20% of entities as held out: their documents must only enter an index after training.
Held-out entities are halved again into `dev` (to choose recipes on) and `test` (to report); twins
(one entity under two names, `TWINS`) are split together. Its rows of the named-source table
(`SOURCES`, collected by `index.sources`): `facts`, `facts:train`, `facts:heldout`, `facts:dev`,
`facts:test` and the question-and-answer documents `facts-qa`, `facts-qa:train`,
`facts-qa:heldout`. It reads only the two PyPI packages' data and never imports `retro`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from index.corpus import Document, NamedSource

HELDOUT_FRACTION = 0.2
SPLITS = ("all", "train", "heldout", "dev", "test")
# One entity under two names in countryinfo, with the same facts: a twin is held out (or trained on)
# together with the first name of its pair, so training on one never leaks the other's answers.
TWINS = (
    ("Serbia", "Serbia and Montenegro"),
    ("Vatican City State", "Holy See (Vatican City State)"),
    ("Palestine", "Palestine, State of"),
)


@dataclass(frozen=True)
class Entity:
    key: str  # "country/france", "element/oxygen": stable, used for doc ids and the split
    name: str  # "France"
    kind: str  # "country" | "element"
    facts: dict[str, str] = field(default_factory=dict, hash=False)  # attribute -> answer text


@dataclass(frozen=True)
class FactPair:
    entity: str  # Entity.key
    question: str  # "What is the capital of France?"
    completion: str  # "The capital of France is" (the answer follows after a space)
    answer: str  # "Paris"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def split_key(entity_key: str) -> str:
    """The key an entity is split by: its own, or for a twin the first name of its pair's."""
    twins = {f"country/{slug(b)}": f"country/{slug(a)}" for a, b in TWINS}
    return twins.get(entity_key, entity_key)


def _unit_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def is_heldout(entity_key: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Deterministic, order-free split: a hash of the key, so adding entities moves no other one."""
    return _unit_hash(split_key(entity_key)) < fraction


def heldout_part(entity_key: str) -> str:
    """ "dev" or "test": the held-out entities halved by a second hash. Recipes are chosen on dev;
    reported figures come from test."""
    return "dev" if _unit_hash("dev-test:" + split_key(entity_key)) < 0.5 else "test"


def heldout_entities(fraction: float = HELDOUT_FRACTION) -> set[str]:
    return {e.key for e in entities() if is_heldout(e.key, fraction)}


# --- structured data ------------------------------------------------------------------------------
def _safe(getter) -> object:
    try:
        return getter()
    except Exception:  # countryinfo raises KeyError/AttributeError for missing fields
        return None


def _country_entities() -> list[Entity]:
    from countryinfo import all_countries

    result, seen = [], set()
    for country in all_countries():
        name = _safe(country.name)
        if not name or slug(name) in seen:
            continue
        seen.add(slug(name))
        facts: dict[str, str] = {}
        if capital := _safe(country.capital):
            facts["capital"] = str(capital)
        if region := _safe(country.region):
            facts["region"] = str(region)
        if subregion := _safe(country.subregion):
            facts["subregion"] = str(subregion)
        if demonym := _safe(country.demonym):
            facts["demonym"] = str(demonym)
        if codes := _safe(country.calling_codes):
            facts["calling_code"] = "+" + str(codes[0]).lstrip("+")
        if population := _safe(country.population):
            facts["population"] = f"{int(population):,}"
        if area := _safe(country.area):
            facts["area"] = f"{int(area):,}"
        if facts:
            result.append(Entity(key=f"country/{slug(name)}", name=str(name), kind="country", facts=facts))
    return result


def _element_entities() -> list[Entity]:
    from mendeleev.fetch import fetch_table

    elements = fetch_table("elements")
    series = dict(zip(*[fetch_table("series")[c] for c in ("id", "name")], strict=True))
    result = []
    for row in elements.itertuples():
        facts = {
            "symbol": row.symbol,
            "atomic_number": str(int(row.atomic_number)),
            "period": str(row.period),
        }
        if isinstance(row.atomic_weight, float) and not math.isnan(row.atomic_weight):
            facts["atomic_weight"] = f"{row.atomic_weight:.3f}".rstrip("0").rstrip(".")
        if row.series_id in series:
            facts["series"] = series[row.series_id].lower()
        if isinstance(row.discoverers, str) and "ancient" not in row.discoverers.lower():
            facts["discoverers"] = row.discoverers.strip().rstrip(".")
        if isinstance(row.discovery_year, float) and not math.isnan(row.discovery_year):
            facts["discovery_year"] = str(int(row.discovery_year))
        name = str(row.name)
        result.append(Entity(key=f"element/{slug(name)}", name=name, kind="element", facts=facts))
    return result


@lru_cache(maxsize=1)
def entities() -> tuple[Entity, ...]:
    """All countries then all elements (mendeleev's table takes ~1 s to load; cached)."""
    return tuple(_country_entities() + _element_entities())


# --- documents ------------------------------------------------------------------------------------
def _country_phrasings(e: Entity) -> list[str]:
    f, n = e.facts, e.name
    p1, p2, p3 = [], [], []
    if "capital" in f:
        p1.append(f"{n} has its capital at {f['capital']}.")
        p2.append(f"The capital of {n} is {f['capital']}.")
        p3.append(f"Capital city: {f['capital']}.")
    if "region" in f:
        where = f"{f['subregion']}, in {f['region']}" if "subregion" in f else f["region"]
        p1.append(f"It is a country of {where}.")
        p2.append(f"{n} is located in {f['region']}.")
        p3.append(f"Region: {f['region']}" + (f" ({f['subregion']})." if "subregion" in f else "."))
    if "demonym" in f:
        p1.append(f"Its people are called {f['demonym']}.")
        p2.append(f"The people of {n} are called {f['demonym']}.")
        p3.append(f"Demonym: {f['demonym']}.")
    if "calling_code" in f:
        p1.append(f"To phone {n}, dial {f['calling_code']}.")
        p2.append(f"The calling code of {n} is {f['calling_code']}.")
        p3.append(f"International calling code: {f['calling_code']}.")
    if "population" in f:
        p1.append(f"About {f['population']} people live there.")
        p2.append(f"The population of {n} is {f['population']}.")
        p3.append(f"Population: {f['population']}.")
    if "area" in f:
        p1.append(f"It covers {f['area']} square kilometres.")
        p2.append(f"The area of {n} is {f['area']} square kilometres.")
        p3.append(f"Area: {f['area']} km2.")
    return [f"{n}. " + " ".join(p1), " ".join(p2), f"{n} (country). " + " ".join(p3)]


def _element_phrasings(e: Entity) -> list[str]:
    f, n = e.facts, e.name
    p1 = [f"{n} is the chemical element with atomic number {f['atomic_number']} and symbol {f['symbol']}."]
    p2 = [
        f"The chemical symbol of {n} is {f['symbol']}.",
        f"The atomic number of {n} is {f['atomic_number']}.",
    ]
    p3 = [f"Symbol: {f['symbol']}.", f"Atomic number: {f['atomic_number']}."]
    p1.append(f"It sits in period {f['period']} of the periodic table.")
    p2.append(f"{n} is in period {f['period']} of the periodic table.")
    p3.append(f"Period: {f['period']}.")
    if "series" in f:
        p1.append(f"It belongs to the {f['series']}.")
        p2.append(f"{n} is one of the {f['series']}.")
        p3.append(f"Series: {f['series']}.")
    if "atomic_weight" in f:
        p1.append(f"Its standard atomic weight is {f['atomic_weight']}.")
        p2.append(f"The atomic weight of {n} is {f['atomic_weight']}.")
        p3.append(f"Atomic weight: {f['atomic_weight']}.")
    if "discoverers" in f:
        year = f" in {f['discovery_year']}" if "discovery_year" in f else ""
        p1.append(f"It was discovered by {f['discoverers']}{year}.")
        p2.append(f"{n} was discovered by {f['discoverers']}.")
        p3.append(f"Discovered by: {f['discoverers']}.")
    if "discovery_year" in f:
        p2.append(f"{n} was discovered in {f['discovery_year']}.")
        p3.append(f"Year of discovery: {f['discovery_year']}.")
    return [" ".join(p1), " ".join(p2), f"{n} (element). " + " ".join(p3)]


def entity_documents(entity: Entity) -> list[Document]:
    """Three documents, one per phrasing, with doc_ids `facts/<kind>/<slug>/p1..p3`."""
    render = _country_phrasings if entity.kind == "country" else _element_phrasings
    return [
        Document(doc_id=f"facts/{entity.key}/p{i}", text=text, source="facts", title=entity.name)
        for i, text in enumerate(render(entity), start=1)
    ]


def fact_documents(split: str = "all", fraction: float = HELDOUT_FRACTION) -> Iterator[Document]:
    """Documents of all entities, of the training entities only, or of the held-out ones only."""
    for entity in _entities_of(split, fraction):
        yield from entity_documents(entity)


# --- fact pairs -----------------------------------------------------------------------------------
# attribute -> (question template, completion template); {n} is the entity's name.
_COUNTRY_PAIRS = {
    "capital": ("What is the capital of {n}?", "The capital of {n} is"),
    "region": ("On which continent or region is {n}?", "{n} is located in"),
    "demonym": ("What are the people of {n} called?", "The people of {n} are called"),
    "calling_code": ("What is the calling code of {n}?", "The calling code of {n} is"),
}
_ELEMENT_PAIRS = {
    "symbol": ("What is the chemical symbol of {n}?", "The chemical symbol of {n} is"),
    "atomic_number": ("What is the atomic number of {n}?", "The atomic number of {n} is"),
    "discoverers": ("Who discovered {n}?", "{n} was discovered by"),
}


def _entity_pairs(entity: Entity) -> list[FactPair]:
    templates = _COUNTRY_PAIRS if entity.kind == "country" else _ELEMENT_PAIRS
    return [
        FactPair(
            entity=entity.key,
            question=question.format(n=entity.name),
            completion=completion.format(n=entity.name),
            answer=entity.facts[attribute],
        )
        for attribute, (question, completion) in templates.items()
        if attribute in entity.facts
    ]


def _entities_of(split: str, fraction: float) -> Iterator[Entity]:
    if split not in SPLITS:
        raise ValueError(f"unknown facts split {split!r}; splits: {', '.join(SPLITS)}")
    for entity in entities():
        if _in_split(entity.key, split, fraction):
            yield entity


def entities_of(split: str, fraction: float = HELDOUT_FRACTION) -> list[Entity]:
    """The entities of one split ("all", "train", "heldout", "dev", "test"), in table order."""
    return list(_entities_of(split, fraction))


def _in_split(entity_key: str, split: str, fraction: float) -> bool:
    if split == "all":
        return True
    held = is_heldout(entity_key, fraction)
    if split in ("dev", "test"):
        return held and heldout_part(entity_key) == split
    return held == (split == "heldout")


def fact_pairs(split: str = "all", fraction: float = HELDOUT_FRACTION) -> Iterator[FactPair]:
    """~1,300 pairs; each completion prompt + " " + answer appears verbatim in phrasing p2."""
    for entity in _entities_of(split, fraction):
        yield from _entity_pairs(entity)


def qa_documents(split: str = "all", fraction: float = HELDOUT_FRACTION) -> Iterator[Document]:
    """One question-and-answer document per entity (doc_id `facts-qa/<kind>/<slug>`): each of its
    fact pairs' questions followed by the answer, "What is the capital of France? Paris. ...".

    Training on the training entities' ones teaches a model the question format; the demo never
    indexes the held-out entities' ones, so its question accuracy measures answering from the
    declarative phrasings, not copying a stored answer to the same question.
    """
    for entity in _entities_of(split, fraction):
        pairs = _entity_pairs(entity)
        if pairs:
            text = f"{entity.name}: questions and answers. " + " ".join(
                f"{p.question} {p.answer}." for p in pairs
            )
            yield Document(doc_id=f"facts-qa/{entity.key}", text=text, source="facts-qa", title=entity.name)


# --- named sources --------------------------------------------------------------------------------
def _split_source(documents: Callable[[str], Iterator[Document]], split: str) -> NamedSource:
    return NamedSource(read=lambda skipped: documents(split))  # rendered data: nothing is skipped


SOURCES = {
    "facts": _split_source(fact_documents, "all"),
    "facts:train": _split_source(fact_documents, "train"),
    "facts:heldout": _split_source(fact_documents, "heldout"),
    "facts:dev": _split_source(fact_documents, "dev"),
    "facts:test": _split_source(fact_documents, "test"),
    "facts-qa": _split_source(qa_documents, "all"),
    "facts-qa:train": _split_source(qa_documents, "train"),
    "facts-qa:heldout": _split_source(qa_documents, "heldout"),
}
