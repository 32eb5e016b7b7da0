"""More reading material for training only: a second world of invented entities, training-only
relations, and questions with a lead-in.

The reading set (`index.reading`) tests sixteen relations of four kinds of entity; its training
documents give 1,600 entities in four training families, asked in three training question forms.
A small model trained on them learns those sixteen templates more than it learns to read. This
module widens the training material, and nothing it makes is ever evaluated:

- **A second world** (`SIZE` entities, its own seed) whose invented words never coincide with a
  word of the reading set's world (every split's words are reserved first), so no evaluation
  name, value or setting occurs here either.
- **Training-only relations** (`EXTRA_RELATIONS`, two per kind), so a passage has six facts and a
  table six labelled lines: more values of the same type to tell apart by their relation.
- **Training families only** (encyclopedia, table, list, news), rendered by `index.reading.render`;
  a third of the news items open with a headline question that ends in the entity's name
  ("What next for X?"), so a question in a passage is not, in itself, where an answer follows.
- **Training question forms only** (0-2 of the reading set's relations, the three written here for
  the extra ones), a third of them after a lead-in that asks nothing by itself ("Quick question:",
  "I was wondering:"), as question-and-answer documents and as chat-template conversations.

Named sources (`SOURCES`): `reading-more:train` (the passages: knowledge an index may serve) and
`reading-more-qa:train` (questions and answers and conversations: training material, doc ids under
`reading-qa/` and `reading-chat/` so that `Recipe.read_prefix` treats them as the reading set's).
It never imports `retro`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache

from index.corpus import Document, NamedSource
from index.reading import SEED as READING_SEED
from index.reading import TRAIN_FAMILIES, TRAIN_SYSTEM_PROMPTS, render, world
from index.reading_world import KINDS, TRAIN_QUESTION_FORMS, NameMaker, Relation, WorldEntity, make_entity

SEED = 20261202
SIZE = 3200
LEAD_INS = ("Quick question:", "I was wondering:", "One more thing.", "Please help me out.", "Hello!")
HEADLINES = ("What next for {e}?", "Who remembers {e}?", "Is this the end for {e}?")


def _r(name, sentence, label, phrase, questions, values) -> Relation:
    # reworded prompts and held-out question forms are the evaluation's business: none here, and the
    # last three question slots repeat the trained ones so no code can pick an untrained form by index
    qs = tuple(questions)
    return Relation(name, sentence, label, phrase, qs + qs, (), values)


EXTRA_RELATIONS: dict[str, tuple[Relation, ...]] = {
    "person": (
        _r("died", "{e} died in {v}.", "Died", "died in {v}",
           ("In which year did {e} die?", "When did {e} die?", "What year did {e} die in?"), "year"),
        _r("spouse", "{e} was married to {v}.", "Spouse", "married to {v}",
           ("Who was {e} married to?", "Who was the spouse of {e}?", "To whom was {e} married?"), "person"),
    ),
    "town": (
        _r("twin", "{e} is twinned with {v}.", "Twin town", "twinned with {v}",
           ("Which town is {e} twinned with?", "What is the twin town of {e}?",
            "With which town is {e} twinned?"), "town"),
        _r("bridges", "{e} has {v} bridges.", "Bridges", "crossed by {v} bridges",
           ("How many bridges does {e} have?", "What is the number of bridges in {e}?",
            "How many bridges are there in {e}?"), "size"),
    ),
    "company": (
        _r("employees", "{e} employs {v} people.", "Employees", "employer of {v} people",
           ("How many people does {e} employ?", "How many employees does {e} have?",
            "What is the number of employees of {e}?"), "size"),
        _r("closed", "{e} closed in {v}.", "Closed", "closed in {v}",
           ("In which year did {e} close?", "When did {e} close?", "What year did {e} close in?"), "year"),
    ),
    "species": (
        _r("predator", "{e} is hunted by {v}.", "Predator", "hunted by {v}",
           ("What hunts {e}?", "What is the predator of {e}?", "By what is {e} hunted?"), "predator"),
        _r("colour", "{e} is {v} in colour.", "Colour", "coloured {v}",
           ("What colour is {e}?", "What is the colour of {e}?", "Which colour does {e} have?"), "colour"),
    ),
}  # fmt: skip
EXTRA_PHRASES = {
    "predator": ("shrews", "swallows", "toads", "bats", "wrens", "lizards", "spiders", "moles", "trout"),
    "colour": ("copper red", "jet black", "olive green", "pale yellow", "deep blue", "rust brown"),
}


class _ReservingNames(NameMaker):
    """A name maker for the second world: the reading set's words are taken before it starts, and
    the extra phrase pools are its own."""

    def value(self, pool: str) -> str:
        if pool in EXTRA_PHRASES:
            return self.rng.choice(EXTRA_PHRASES[pool])
        return super().value(pool)


def _reading_words() -> set[str]:
    """Every invented word of the reading set's world, in every split: names, values, settings."""
    words: set[str] = set()
    for entities in world().values():
        for e in entities:
            for text in (e.name, *e.facts.values(), *e.setting.values()):
                words.update(w.strip(",").capitalize() for w in text.split())
    return words


@lru_cache(maxsize=1)
def second_world() -> list[tuple[WorldEntity, tuple[Relation, ...]]]:
    """(entity, its relations: the kind's four and two training-only ones), kinds in turn."""
    rng = random.Random(SEED)
    names = _ReservingNames(rng)
    names.used |= _reading_words()
    out = []
    for i in range(SIZE):
        kind = KINDS[i % len(KINDS)]
        extra = EXTRA_RELATIONS[kind.name]
        entity = make_entity(kind, names, rng, "train2")
        facts = dict(entity.facts) | {rel.name: names.value(rel.values) for rel in extra}
        out.append((replace(entity, facts=facts), kind.relations + extra))
    return out


def _question(rel: Relation, entity: WorldEntity, rng: random.Random) -> str:
    question = rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)
    if rng.random() < 1 / 3:
        question = f"{rng.choice(LEAD_INS)} {question}"
    return question


def documents(kinds: tuple[str, ...]) -> list[Document]:
    """The second world's passages (`"passages"`) and its Q&A documents and conversations (`"qa"`)."""
    docs = []
    for entity, relations in second_world():
        slug = entity.key.removeprefix("reading/")
        rng = random.Random(f"{READING_SEED}:{SEED}:{entity.key}")
        if "passages" in kinds:
            for family in TRAIN_FAMILIES:
                text = render(entity, family, rng, relations).text()
                if family == "news" and rng.random() < 1 / 3:
                    text = rng.choice(HEADLINES).format(e=entity.name) + "\n" + text
                docs.append(
                    Document(f"{entity.key}/{family}", text, source="reading-more", title=entity.name)
                )
        if "qa" in kinds:
            order = list(relations)
            rng.shuffle(order)
            qa = " ".join(f"{_question(rel, entity, rng)} {entity.facts[rel.name]}." for rel in order)
            docs.append(Document(f"reading-qa/{slug}", qa, source="reading-more-qa", title=entity.name))
            turns = [rng.choice(TRAIN_SYSTEM_PROMPTS)]
            for rel in rng.sample(order, rng.randint(1, 3)):
                turns += [_question(rel, entity, rng), f"{entity.facts[rel.name]}."]
            docs.append(
                Document(f"reading-chat/{slug}", " ".join(turns), source="reading-more-qa", title=entity.name)
            )
    return docs


SOURCES = {
    "reading-more:train": NamedSource(read=lambda skipped: documents(("passages",))),
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "reading-more-qa:train": NamedSource(read=lambda skipped: documents(("qa",))),
}
