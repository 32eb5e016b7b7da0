"""The reading set: passages about made-up entities in families of styles, and prompts about them.

This module owns the project's test of *reading*: can a model answer from a passage it has never
seen, written in a style it was never trained on, asked in words it was never trained on? The
entities, their relations and the ways each relation is said come from `index.reading_world`;
this module renders them:

- **Style families.** Training families (`TRAIN_FAMILIES`: encyclopedia, table, list, news) and
  held-out families (`HELDOUT_FAMILIES`: dialogue, letter, record), which no training document is
  ever written in. A passage is a list of segments (sentences or lines); each relation's value sits
  in one segment, so the word-for-word prefix before it is known exactly.
- **Splits by entity**, from one seed: `train` (entities of the training documents), `dev` (to choose
  recipes on) and `test` (frozen: report figures from it). No name is shared between splits.
- **Training documents** (`training_documents()`): every training entity in each training family
  (named source `reading:train`, doc ids `reading/train/<kind>/<slug>/<family>`), and one
  question-and-answer document per entity in the *training* question forms only (named source
  `reading-qa:train`, doc ids `reading-qa/train/<kind>/<slug>`): "When was Dromilou Works founded?
  1920. ...". A serving index holds the passages, not the Q&A documents (training material).
- **Evaluation** (`evaluation_set(split)`): for each dev/test entity one passage in a held-out
  family and `ReadingItem`s of these kinds, each naming the documents that state its answer:
  `prefix` (the passage word for word from its start up to the value), `question` (a held-out question form),
  `question_trained_form` (a training form: style without wording), `reworded` (a completion whose
  words are not in the passage), `long` (the entity named more than a chunk before the question),
  `lookalike` (two entities with one name stem in one passage: did it take the other's value?),
  and `update` (an indexed passage and a later one that changes a value: new, old or other?).

Its rows of the named-source table (`SOURCES`, collected by `index.sources`): `reading:train`,
`reading-qa:train`, `reading:dev`, `reading:test` (the evaluation passages, which only ever enter
an index after training). It never imports `retro`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache

from index.corpus import Document, NamedSource
from index.reading_world import (
    HELDOUT_QUESTION_FORMS,
    KIND_BY_NAME,
    TRAIN_QUESTION_FORMS,
    Relation,
    WorldEntity,
    make_world,
)

SEED = 20261201
SIZES = {"train": 1600, "dev": 96, "test": 160}
TRAIN_FAMILIES = ("encyclopedia", "table", "list", "news")
HELDOUT_FAMILIES = ("dialogue", "letter", "record")
SPLITS = ("train", "dev", "test")
ITEM_KINDS = ("prefix", "question", "question_trained_form", "reworded", "long", "lookalike", "update")

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")  # fmt: skip
_SPEAKERS = ("Mira", "Tomas", "Ines", "Oskar", "Lena", "Pavel", "Ada", "Ravi")
_EVENTS = (
    "a fire in its old archive",
    "a visit from the regional governor",
    "a record harvest festival",
    "the reopening of its main hall",
    "a long-running dispute over land",
    "an unusual winter flood",
)
_FILLER = (
    "It has been a long week and the weather here has been grey and wet for days on end.",
    "My notes are spread over three notebooks, and half of them are in a hand I can barely read.",
    "Before I forget, the library closes early on Fridays, so I had to hurry through the shelves.",
    "The teacher said the report should be short, clear and written in our own words.",
)


# how a long prompt names its subject after the lead-in ("When was this company founded?")
THIS_REFERENCE = {
    "person": "this person",
    "town": "this town",
    "company": "this company",
    "species": "this insect",
}


@dataclass(frozen=True)
class Passage:
    doc_id: str
    family: str
    text: str
    prefixes: dict[str, str] = field(hash=False)  # relation -> the passage from its start to the value


@dataclass(frozen=True)
class ReadingItem:
    kind: str  # one of ITEM_KINDS
    entity: str  # WorldEntity.key
    relation: str
    family: str  # the style family of the passage that states the answer
    form: str  # which prompt form: "q3", "reworded1", "prefix"
    prompt: str
    answer: str
    evidence: tuple[str, ...]  # doc ids that state the answer
    other_answer: str | None = None  # lookalike: the twin's value; update: the old value
    other_evidence: tuple[str, ...] = ()  # update: the passage with the old value


@dataclass
class EvaluationSet:
    split: str
    documents: list[Document]  # to add to an index after training
    items: list[ReadingItem]
    removed_for_update: list[str]  # doc ids to drop for the "old passage removed" setting


# --- rendering ------------------------------------------------------------------------------------
def _reference(entity: WorldEntity, start: bool) -> str:
    """How later sentences name the entity: the surname, or "the town" / "the company" / ..."""
    if entity.kind == "person":
        return entity.name.split()[-1]
    noun = {"town": "town", "company": "company", "species": entity.name.split()[-1]}[entity.kind]
    return ("The " if start else "the ") + noun


def _say(template: str, entity: WorldEntity, value: str, refer: bool) -> str:
    """A relation template filled in; with `refer`, the entity is named by its reference."""
    if not refer:
        return template.format(e=entity.name, v=value)
    return template.format(e=_reference(entity, template.startswith("{e}")), v=value)


def lower_first(text: str) -> str:
    """A sentence continued after "I learned that ": "The town ..." -> "the town ...", names kept."""
    return "t" + text[1:] if text.startswith("The ") else text


class _Writer:
    """Collects a passage's segments and, for each relation, the words before its value."""

    def __init__(self, separator: str = " "):
        self.parts: list[str] = []
        self.prefixes: dict[str, str] = {}
        self.separator = separator

    def add(self, text: str, relation: str | None = None, value: str | None = None) -> None:
        if relation is not None and value is not None:
            head = text[: text.index(value)]
            # the prompt: the passage word for word from its start up to the value
            self.prefixes[relation] = self.separator.join([*self.parts, head]).rstrip()
        self.parts.append(text)

    def text(self) -> str:
        return self.separator.join(self.parts)


def _relations(entity: WorldEntity) -> tuple[Relation, ...]:
    return KIND_BY_NAME[entity.kind].relations


def _first_sentence(entity: WorldEntity) -> str:
    noun = KIND_BY_NAME[entity.kind].noun.format(**entity.setting)
    return f"{entity.name} is {noun}."


def render(
    entity: WorldEntity, family: str, rng: random.Random, relations: tuple[Relation, ...] | None = None
) -> _Writer:
    """One passage about `entity` in `family`, stating `relations` (default: its kind's four)."""
    facts = entity.facts
    relations = list(relations or _relations(entity))
    rng.shuffle(relations)
    if family in ("encyclopedia", "news", "letter"):
        w = _Writer(" ")
        if family == "news":
            w.add(f"{entity.setting['town'].upper()}, {rng.choice(_MONTHS)} {rng.randint(1, 28)} -")
            w.add(f"{entity.name} was in the news this week after {rng.choice(_EVENTS)}.")
        elif family == "letter":
            w.add(f"Dear {rng.choice(_SPEAKERS)},")
            w.add(f"last week I finally went to see {entity.name}, as I had promised.")
        else:
            w.add(_first_sentence(entity))
        for i, rel in enumerate(relations):
            refer = i > 0 and rng.random() < 0.6
            sentence = _say(rel.sentence, entity, facts[rel.name], refer)
            if family == "letter":
                sentence = rng.choice(
                    ("The guide told us that ", "I learned that ", "Someone mentioned that ")
                ) + lower_first(sentence)
            elif family == "news" and rng.random() < 0.5:
                sentence = rng.choice(("Records show that ", "Officials confirmed that ")) + lower_first(
                    sentence
                )
            w.add(sentence, rel.name, facts[rel.name])
        if family == "letter":
            w.add(f"With love, {rng.choice(_SPEAKERS)}")
        return w
    if family == "table":
        w = _Writer("\n")
        w.add(entity.name)
        for rel in relations:
            w.add(f"{rel.label}: {facts[rel.name]}", rel.name, facts[rel.name])
        return w
    if family == "list":
        w = _Writer("\n")
        w.add(f"Facts about {entity.name}:")
        for rel in relations:
            phrase = rel.phrase.format(v=facts[rel.name])
            w.add(f"- {phrase}", rel.name, facts[rel.name])
        return w
    if family == "record":
        fields = [f"{rel.label.lower()}: {facts[rel.name]}" for rel in relations]
        w = _Writer(" | ")
        w.add(f"record {rng.randint(1000, 9999)}")
        w.add(f"name: {entity.name}")
        for rel, text in zip(relations, fields, strict=True):
            w.add(text, rel.name, facts[rel.name])
        return w
    if family == "dialogue":
        a, b = rng.sample(_SPEAKERS, 2)
        w = _Writer("\n")
        w.add(f"{a}: Have you heard of {entity.name}?")
        for i, rel in enumerate(relations):
            sentence = _say(rel.sentence, entity, facts[rel.name], refer=True)
            lead = rng.choice(("Oh, I know that one. ", "If I remember right, ", "Yes! ", "My aunt says "))
            said = sentence if lead.endswith("! ") or lead.endswith(". ") else lower_first(sentence)
            w.add(
                f"{b}: {lead}{said}",
                rel.name,
                facts[rel.name],
            )
            if i < len(relations) - 1:
                w.add(f"{a}: {rng.choice(('What else?', 'And?', 'Go on.', 'Anything more?'))}")
        return w
    raise ValueError(f"unknown style family {family!r}")


def passage(entity: WorldEntity, family: str) -> Passage:
    rng = random.Random(f"{SEED}:{entity.key}:{family}:")  # the trailing ":" keeps the texts as first drawn
    w = render(entity, family, rng)
    return Passage(f"{entity.key}/{family}", family, w.text(), w.prefixes)


# --- the world, split -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def world() -> dict[str, list[WorldEntity]]:
    return make_world(SIZES, SEED)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown reading split {split!r}; splits: {', '.join(SPLITS)}")


def training_documents(kinds: tuple[str, ...] = ("passages", "qa")) -> list[Document]:
    """Training passages (training families only) and Q&A documents (training question forms only),
    entity by entity; `kinds` picks one of the two (named sources `reading:train`, `reading-qa:train`)."""
    docs = []
    for entity in world()["train"]:
        for family in TRAIN_FAMILIES:
            p = passage(entity, family)
            docs.append(Document(p.doc_id, p.text, source="reading", title=entity.name))
        rng = random.Random(f"{SEED}:qa:{entity.key}")
        relations = list(_relations(entity))
        rng.shuffle(relations)
        qa = " ".join(
            rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)
            + f" {entity.facts[rel.name]}."
            for rel in relations
        )
        slug = entity.key.removeprefix("reading/")
        docs.append(Document(f"reading-qa/{slug}", qa, source="reading-qa", title=entity.name))
        if "qa-forms" in kinds:
            docs += _qa_rounds(entity, slug)
        if "chat" in kinds:
            docs.append(_conversation(entity, slug))
    wanted = {
        "reading": "passages",
        "reading-qa": "qa",
        "reading-qa-forms": "qa-forms",
        "reading-chat": "chat",
    }
    return [d for d in docs if wanted[d.source] in kinds]


def _qa_rounds(entity: WorldEntity, slug: str) -> list[Document]:
    """One more question-and-answer document per training question form: relation i asked in form
    (i + round) mod 3, so across the rounds every relation is asked in every training form."""
    rng = random.Random(f"{SEED}:qa-forms:{entity.key}")
    docs = []
    for round_ in range(len(TRAIN_QUESTION_FORMS)):
        relations = list(_relations(entity))
        order = list(range(len(relations)))
        rng.shuffle(order)
        qa = " ".join(
            relations[i]
            .questions[TRAIN_QUESTION_FORMS[(i + round_) % len(TRAIN_QUESTION_FORMS)]]
            .format(e=entity.name)
            + f" {entity.facts[relations[i].name]}."
            for i in order
        )
        docs.append(
            Document(f"reading-qa/{slug}/form{round_}", qa, source="reading-qa-forms", title=entity.name)
        )
    return docs


# System messages of the training conversations; the evaluation's chat prompts use none of them.
TRAIN_SYSTEM_PROMPTS = (
    "Answer briefly.",
    "Answer the questions from what you have read.",
    "You are a helpful assistant. Give short answers.",
    "Reply with the answer only.",
)


def _conversation(entity: WorldEntity, slug: str) -> Document:
    """A short conversation about one entity, rendered as `retro.chat_template` renders a chat: a
    system message, then one to three questions (training forms) each followed by its answer, the
    turns joined by one space; one conversation per document, so end-of-text follows the last answer."""
    rng = random.Random(f"{SEED}:chat:{entity.key}")
    relations = list(_relations(entity))
    rng.shuffle(relations)
    turns = [rng.choice(TRAIN_SYSTEM_PROMPTS)]
    for rel in relations[: rng.randint(1, 3)]:
        turns.append(rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name))
        turns.append(f"{entity.facts[rel.name]}.")
    return Document(f"reading-chat/{slug}", " ".join(turns), source="reading-chat", title=entity.name)


def _twin(entity: WorldEntity) -> WorldEntity:
    """A look-alike: the same name stem with another ending (its values are drawn by the caller)."""
    first, last = entity.name.split()[0], entity.name.split()[-1]
    if entity.kind == "person":
        name = f"{first}a {last}"
    else:
        name = first + {"town": "ville", "company": " Brothers", "species": " bug"}[entity.kind]
    return WorldEntity(entity.key + "-twin", entity.kind, name, {}, entity.setting)


def _other_value(entity: WorldEntity, relation: str, pool: list[WorldEntity], rng: random.Random) -> str:
    """A value of the same relation from another entity of the same kind (never the entity's own)."""
    candidates = [
        e.facts[relation]
        for e in pool
        if e.kind == entity.kind and e.facts[relation] != entity.facts[relation]
    ]
    return rng.choice(candidates)


def evaluation_set(split: str) -> EvaluationSet:
    """The documents and items of the dev or test split (see the module docstring)."""
    _check_split(split)
    if split == "train":
        raise ValueError("the reading evaluation uses the dev or test split")
    entities = world()[split]
    rng = random.Random(f"{SEED}:items:{split}")
    docs: list[Document] = []
    items: list[ReadingItem] = []
    removed: list[str] = []
    n = len(entities)
    plain, lookalikes, updates = (
        entities[: n * 3 // 4],
        entities[n * 3 // 4 : n * 7 // 8],
        entities[n * 7 // 8 :],
    )
    for i, entity in enumerate(plain):
        family = HELDOUT_FAMILIES[i % len(HELDOUT_FAMILIES)]
        p = passage(entity, family)
        docs.append(Document(p.doc_id, p.text, source=f"reading:{split}", title=entity.name))
        for rel in _relations(entity):
            value, ev = entity.facts[rel.name], (p.doc_id,)
            base = dict(entity=entity.key, relation=rel.name, family=family, answer=value, evidence=ev)
            items.append(ReadingItem(kind="prefix", form="prefix", prompt=p.prefixes[rel.name], **base))
            f = rng.choice(HELDOUT_QUESTION_FORMS)
            items.append(
                ReadingItem(
                    kind="question", form=f"q{f}", prompt=rel.questions[f].format(e=entity.name), **base
                )
            )
            f = rng.choice(TRAIN_QUESTION_FORMS)
            items.append(
                ReadingItem(
                    kind="question_trained_form",
                    form=f"q{f}",
                    prompt=rel.questions[f].format(e=entity.name),
                    **base,
                )
            )
            f = rng.randrange(len(rel.reworded))
            items.append(
                ReadingItem(
                    kind="reworded", form=f"reworded{f}", prompt=rel.reworded[f].format(e=entity.name), **base
                )
            )
        rel = rng.choice(_relations(entity))
        f = rng.choice(HELDOUT_QUESTION_FORMS)
        question = rel.questions[f].format(e=THIS_REFERENCE[entity.kind])
        long_prompt = (
            f"I am writing a short report about {entity.name}. "
            + " ".join(rng.sample(_FILLER, 3))
            + " "
            + question[:1].upper()
            + question[1:]
        )
        items.append(
            ReadingItem(
                "long",
                entity.key,
                rel.name,
                family,
                f"q{f}",
                long_prompt,
                entity.facts[rel.name],
                (p.doc_id,),
            )
        )
    for entity in lookalikes:
        twin = _twin(entity)
        twin_facts = {rel.name: _other_value(entity, rel.name, entities, rng) for rel in _relations(entity)}
        rels = list(_relations(entity))
        rng.shuffle(rels)
        w = _Writer(" ")
        w.add(f"{entity.name} and {twin.name} are easily confused.")
        for rel in rels:
            ours, theirs = (
                _say(rel.sentence, entity, entity.facts[rel.name], False),
                _say(rel.sentence, twin, twin_facts[rel.name], False),
            )
            pair = [ours, theirs]
            rng.shuffle(pair)
            for sentence in pair:
                w.add(sentence)
        doc_id = f"{entity.key}/comparison"
        docs.append(Document(doc_id, w.text(), source=f"reading:{split}", title=entity.name))
        for rel in rels:
            f = rng.choice(HELDOUT_QUESTION_FORMS)
            items.append(
                ReadingItem(
                    "lookalike",
                    entity.key,
                    rel.name,
                    "comparison",
                    f"q{f}",
                    rel.questions[f].format(e=entity.name),
                    entity.facts[rel.name],
                    (doc_id,),
                    other_answer=twin_facts[rel.name],
                )
            )
    for i, entity in enumerate(updates):
        family = HELDOUT_FAMILIES[i % len(HELDOUT_FAMILIES)]
        old = passage(entity, family)
        docs.append(Document(old.doc_id, old.text, source=f"reading:{split}", title=entity.name))
        rel = rng.choice(_relations(entity))
        new_value = _other_value(entity, rel.name, entities, rng)
        month = rng.choice(_MONTHS)
        sentence = _say(rel.sentence, entity, new_value, False)
        update_text = rng.choice(
            (
                f"Update, {month} 2026: new records show that {lower_first(sentence)}",
                f"Correction ({month} 2026): {sentence} Earlier sources were wrong.",
            )
        )
        update_id = f"{entity.key}/update"
        docs.append(Document(update_id, update_text, source=f"reading:{split}", title=entity.name))
        removed.append(old.doc_id)
        f = rng.choice(HELDOUT_QUESTION_FORMS)
        items.append(
            ReadingItem(
                "update",
                entity.key,
                rel.name,
                family,
                f"q{f}",
                rel.questions[f].format(e=entity.name),
                new_value,
                (update_id,),
                other_answer=entity.facts[rel.name],
                other_evidence=(old.doc_id,),
            )
        )
    return EvaluationSet(split, docs, items, removed)


def reading_documents(split: str) -> list[Document]:
    """The documents of a named source `reading:<split>`: for "train" the training passages only
    (knowledge an index may serve), for "dev" and "test" the evaluation passages."""
    _check_split(split)
    return training_documents(("passages",)) if split == "train" else evaluation_set(split).documents


SOURCES = {
    **{
        f"reading:{split}": NamedSource(read=lambda skipped, split=split: reading_documents(split))
        for split in SPLITS
    },
    # training material, not knowledge: a serving index leaves it out (it outranks the passages a
    # question is about, by sharing the question's words)
    "reading-qa:train": NamedSource(read=lambda skipped: training_documents(("qa",))),
    # three more per entity: every relation in every training question form
    "reading-qa-forms:train": NamedSource(read=lambda skipped: training_documents(("qa-forms",))),
    # the same material as conversations in the chat template (system message, questions, answers)
    "reading-chat:train": NamedSource(read=lambda skipped: training_documents(("chat",))),
}
