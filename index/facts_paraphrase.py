"""Relation discrimination for training: the training entities' real facts asked in many wordings,
every relation of an entity in one document, so a reader must tell the relation apart, not take the
first value it finds after the entity's name.

The fourth-round demo (2026-12-03) lost real-fact completions (91.5% -> 79-81% on the frozen test
split) where a value sits beside a similar one in the same passage: "The calling code of Algeria
is" -> " Algiers (country). Capital city: ...", atomic numbers answered with the atomic weight. Its
Q&A training asked four country relations and three element relations in one wording each
(`index.facts.qa_documents`); the numeric neighbours (population, area, period, atomic weight)
were never asked at all, so nothing in training punished taking the wrong number.

Per training entity, `DOCS_PER_ENTITY` documents (doc ids `facts-qa/<kind>/<slug>/para<i>`, so that
`Recipe.read_prefix=facts-qa/` reads them from the entity's fact passages) ask every relation the
entity has, in a shuffled order, each in a wording drawn from `WORDINGS`: questions, terse record
questions ("Algeria: calling code?"), imperatives, and completions that end where the value starts.
The answer follows, then a full stop (values with a unit keep it, as the passages write them).

What stays held out: only `facts:train` entities get documents; the held-out entities' facts and
the evaluation's fact pairs (`index.facts.fact_pairs` on `facts:dev`/`facts:test`) are never
rendered here. The evaluation's wordings for real facts are the trained ones (its question
templates are `facts-qa:train`'s, its completions the `p2` passages' own words), so reusing them is
no leak: the real-fact tables measure held-out entities, the reading tables held-out wordings.
Named source `facts-qa-para:train`. Training material only: no serving index holds it. It never
imports `retro`.
"""

from __future__ import annotations

import random

from index.corpus import Document, NamedSource
from index.facts import HELDOUT_FRACTION, Entity, entities_of

SEED = "facts-qa-para-2026-12-04"
DOCS_PER_ENTITY = 6
LEAD_IN_SHARE = 0.15
LEAD_INS = ("Question:", "Quick question:", "Tell me:", "One more:")

# relation -> wordings with {n} (the entity's name); a wording that ends in "?" or "." is a question,
# any other is a completion that the value continues. Where a passage writes a unit after the value
# (`UNITS`), the answer carries it.
WORDINGS: dict[str, tuple[str, ...]] = {
    "capital": (
        "What is the capital of {n}?", "Which city is the capital of {n}?", "{n}: capital?",
        "Name the capital city of {n}.", "What city is {n} governed from?", "The capital of {n} is",
        "{n}'s capital is", "The capital city of {n} is", "{n} has its capital at",
    ),
    "region": (
        "On which continent or region is {n}?", "Which region is {n} part of?", "{n}: region?",
        "Where in the world is {n}?", "{n} is located in", "{n} lies in", "The region of {n} is",
    ),
    "subregion": (
        "Which part of the world is {n} in, more precisely?", "{n}: subregion?", "The subregion of {n} is",
    ),
    "demonym": (
        "What are the people of {n} called?", "What is the demonym of {n}?", "{n}: demonym?",
        "What do you call someone from {n}?", "The people of {n} are called", "People from {n} are called",
        "The demonym of {n} is",
    ),
    "calling_code": (
        "What is the calling code of {n}?", "Which code do you dial to phone {n}?", "{n}: calling code?",
        "What is the international dialling code of {n}?", "State the telephone code of {n}.",
        "The calling code of {n} is", "To phone {n}, dial", "{n}'s international calling code is",
        "The telephone code of {n} is",
    ),
    "population": (
        "What is the population of {n}?", "How many people live in {n}?", "{n}: population?",
        "State the number of inhabitants of {n}.", "The population of {n} is", "{n} has a population of",
        "The number of people living in {n} is",
    ),
    "area": (
        "What is the area of {n}?", "How large is {n}?", "{n}: area?", "State the surface area of {n}.",
        "The area of {n} is", "{n} covers", "The land area of {n} is",
    ),
    "symbol": (
        "What is the chemical symbol of {n}?", "Which symbol stands for {n}?", "{n}: symbol?",
        "Write the element symbol of {n}.", "The chemical symbol of {n} is", "The symbol of {n} is",
        "{n} has the symbol", "{n} is written with the symbol",
    ),
    "atomic_number": (
        "What is the atomic number of {n}?", "How many protons does an atom of {n} have?",
        "{n}: atomic number?", "State the atomic number of {n}.", "The atomic number of {n} is",
        "{n} has atomic number", "{n} is the chemical element with atomic number",
        "The number of protons in {n} is",
    ),
    "period": (
        "In which period of the periodic table is {n}?", "{n}: period?", "Which period is {n} in?",
        "{n} is in period", "{n} sits in period", "The period of {n} is",
    ),
    "series": (
        "Which series does {n} belong to?", "{n}: series?", "What kind of element is {n}?",
        "{n} is one of the", "{n} belongs to the", "The series of {n} is the",
    ),
    "atomic_weight": (
        "What is the atomic weight of {n}?", "What is the standard atomic weight of {n}?",
        "{n}: atomic weight?", "State the atomic mass of {n}.", "The atomic weight of {n} is",
        "The standard atomic weight of {n} is", "{n} has an atomic weight of",
    ),
    "discoverers": (
        "Who discovered {n}?", "Who was {n} discovered by?", "{n}: discovered by?",
        "Name the discoverer of {n}.",
        "{n} was discovered by", "The discoverer of {n} was", "{n} was first identified by",
    ),
    "discovery_year": (
        "In which year was {n} discovered?", "When was {n} discovered?", "{n}: year of discovery?",
        "{n} was discovered in", "{n} was first identified in", "The year {n} was discovered was",
    ),
}  # fmt: skip
UNITS = {"area": " square kilometres"}


def _answer(relation: str, value: str) -> str:
    return value + UNITS.get(relation, "")


def _item(entity: Entity, relation: str, rng: random.Random) -> str:
    wording = rng.choice(WORDINGS[relation]).format(n=entity.name)
    if rng.random() < LEAD_IN_SHARE and wording.endswith(("?", ".")):
        wording = f"{rng.choice(LEAD_INS)} {wording}"
    return f"{wording} {_answer(relation, entity.facts[relation])}."


def entity_qa_documents(entity: Entity, docs_per_entity: int = DOCS_PER_ENTITY) -> list[Document]:
    """`docs_per_entity` documents, each asking every relation of `entity` once, shuffled."""
    rng = random.Random(f"{SEED}:{entity.key}")
    relations = [r for r in WORDINGS if r in entity.facts]
    docs = []
    for i in range(docs_per_entity):
        rng.shuffle(relations)
        text = " ".join(_item(entity, r, rng) for r in relations)
        docs.append(
            Document(f"facts-qa/{entity.key}/para{i}", text, source="facts-qa-para", title=entity.name)
        )
    return docs


def documents(split: str = "train") -> list[Document]:
    """The paraphrased Q&A documents of every entity of `split` (training: "train" only)."""
    return [doc for entity in entities_of(split, HELDOUT_FRACTION) for doc in entity_qa_documents(entity)]


SOURCES = {
    # training material, not knowledge: a serving index leaves it out, like facts-qa:train
    "facts-qa-para:train": NamedSource(read=lambda skipped: documents("train")),
}
