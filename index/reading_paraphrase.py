"""Question paraphrases for training: the reading set's relations asked in many more wordings and
structures than its three training question forms, none of them a held-out form's wording.

The demo reader of 2026-12-03 answered held-out question forms by structure: statement-questions
("{e} was born in what year?") 35% on dev, noun-phrase questions 24%, imperatives that end in a
full stop ("Name the mentor of {e}.") 2%, while every training question was a wh-question ending
in "?". This module gives training more *structures* and *words* for the same relations, so the
reader has to find a value by its relation rather than by one template:

- **Cores** per relation: the three training forms, a few more wh-questions written here
  (`EXTRA_QUESTIONS`), a terse record question from the relation's label ("{e}: mayor?"), and
  imperatives and elliptic questions built on a noun phrase (`NOUN_PHRASES`: "State the teacher of
  {e}.", "And the teacher of {e}?").
- **Wrappers**: a lead-in that asks nothing by itself, the entity named first and then referred to
  as "this town" ("About {e}: when was this town founded?"). No closing words after a question:
  training loss covers the question too, and a model trained on "...? Thanks. 1523." learned to
  say "Thanks." before its answer (read on dev, 2026-12-03).

**What stays held out** (checked when the templates are built, `check_template`, and in
tests/index/test_reading_paraphrase.py): no template contains a word trigram of one of its
relation's held-out question forms or reworded prompts that its training forms do not already
contain, and no template is a held-out form with its first word changed. The held-out *structures*
(imperatives, statement-questions) are trained in other words here; their own wordings never are.

Named source `reading-qa-para:train`: per training entity three question-and-answer documents
(every relation once each, doc ids `reading-qa/<slug>/para<i>`) and one conversation in the chat
template (`reading-chat/<slug>/para`), so that `Recipe.read_prefix` treats them as the reading set's
other Q&A documents. Training material only: no serving index holds them. It never imports `retro`.
"""

from __future__ import annotations

import random
import re
from functools import cache

from index.corpus import Document, NamedSource
from index.reading import SEED as READING_SEED
from index.reading import TRAIN_SYSTEM_PROMPTS, world
from index.reading_world import KIND_BY_NAME, TRAIN_QUESTION_FORMS, Relation

DOCS_PER_ENTITY = 3
BARE_SHARE = 0.4  # questions asked without a wrapper

# (kind, relation) -> wh-questions beyond the training forms
EXTRA_QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "born"): ("Which year saw the birth of {e}?", "What was {e}'s year of birth?"),
    ("person", "hometown"): ("Which town was {e} raised in?", "What town did {e} come from?"),
    ("person", "trade"): ("What kind of work did {e} do?", "What profession did {e} have?"),
    ("person", "mentor"): ("Who trained {e}?", "Under whom did {e} study?"),
    ("town", "founded"): ("When did {e} come into existence?", "Which year did {e} start in?"),
    ("town", "mayor"): ("Who runs {e} as its mayor?", "Who is in charge of {e}?"),
    ("town", "known_for"): ("What made {e} well known?", "What is {e} best known for?"),
    ("town", "population"): ("How many people does {e} have?", "How large is the population of {e}?"),
    ("company", "founded"): ("When did {e} start trading?", "Which year did {e} start in?"),
    ("company", "founder"): ("Who began {e}?", "Which person created {e}?"),
    ("company", "product"): ("What goods does {e} make?", "What does {e} sell?"),
    ("company", "headquarters"): ("Where is {e} located?", "In which town does {e} have its offices?"),
    ("species", "food"): ("What food does {e} live on?", "On what does {e} feed?"),
    ("species", "habitat"): ("Where is {e} found?", "In which surroundings does {e} live?"),
    ("species", "length"): ("How big does {e} get?", "How many millimetres does {e} measure?"),
    ("species", "discovered"): ("When was {e} first seen?", "Which year was {e} first found in?"),
}
# (kind, relation) -> the thing asked for, as a noun phrase
NOUN_PHRASES: dict[tuple[str, str], str] = {
    ("person", "born"): "{e}'s year of birth",
    ("person", "hometown"): "the home town of {e}",
    ("person", "trade"): "the occupation of {e}",
    ("person", "mentor"): "the teacher of {e}",
    ("town", "founded"): "the founding year of {e}",
    ("town", "mayor"): "the current mayor of {e}",
    ("town", "known_for"): "what {e} is known for",
    ("town", "population"): "the population of {e}",
    ("company", "founded"): "the founding year of {e}",
    ("company", "founder"): "the founder of {e}",
    ("company", "product"): "what {e} makes",
    ("company", "headquarters"): "the headquarters of {e}",
    ("species", "food"): "the diet of {e}",
    ("species", "habitat"): "the natural habitat of {e}",
    ("species", "length"): "how many millimetres long {e} grows",
    ("species", "discovered"): "the year of the first record of {e}",
}
IMPERATIVES = ("State {np}.", "Say {np}.", "Please write down {np}.", "I would like to know {np}.",
               "Look up {np}.")  # fmt: skip
ELLIPTIC = ("And {np}?", "{NP}?")
LEAD_INS = ("Quick question:", "Question:", "I have a question.", "Can you help?", "Here is one for you.")
THIS = {"person": "this person", "town": "this town", "company": "this company", "species": "this insect"}


def _words(template: str) -> list[str]:
    return re.findall(r"[a-z]+|\{e\}", template.lower())


def word_trigrams(template: str) -> set[tuple[str, ...]]:
    """The lower-cased word trigrams of `template`, {e} one word (also `index.wiki_qa`'s check)."""
    w = _words(template)
    return {tuple(w[i : i + 3]) for i in range(len(w) - 2)}


def check_template(template: str, rel: Relation) -> None:
    """Raise ValueError if `template` (with {e}) says what a held-out form or reworded prompt of
    `rel` says: a word trigram of theirs that the training forms lack, or the same words after
    the first."""
    held = rel.held_out_wordings
    trained = set().union(*(word_trigrams(rel.questions[f]) for f in TRAIN_QUESTION_FORMS))
    forbidden = set().union(*(word_trigrams(h) for h in held)) - trained
    shared = word_trigrams(template) & forbidden
    if shared:
        raise ValueError(f"{template!r} shares {sorted(shared)} with a held-out wording of {rel.name!r}")
    if any(_words(template)[1:] == _words(h)[1:] for h in held):
        raise ValueError(f"{template!r} is a held-out wording of {rel.name!r} with another first word")


@cache
def templates(kind: str, relation: str) -> tuple[tuple[str, ...], ...]:
    """Every training wording of one relation: per core, the bare core first and then its wrapped
    variants; each checked by `check_template`."""
    rel = next(r for r in KIND_BY_NAME[kind].relations if r.name == relation)
    np = NOUN_PHRASES[(kind, relation)]
    label = rel.label.split(" (")[0].lower()
    cores = [rel.questions[f] for f in TRAIN_QUESTION_FORMS]
    cores += list(EXTRA_QUESTIONS[(kind, relation)]) + [f"{{e}}: {label}?"]
    cores += [t.format(np=np) for t in IMPERATIVES]
    cores += [t.format(np=np, NP=np[0].upper() + np[1:]) for t in ELLIPTIC]
    out = []
    for core in cores:
        variants = [core] + [f"{lead} {core}" for lead in LEAD_INS]
        if core.count("{e}") == 1 and not core.startswith("{e}"):
            this = core.replace("{e}", THIS[kind])
            variants.append(f"About {{e}}: {this[0].lower()}{this[1:]}")
        for template in variants:
            check_template(template, rel)
        out.append(tuple(variants))
    return tuple(out)


def ask_paraphrase(kind: str, rel: Relation, name: str, rng: random.Random) -> str:
    """A core drawn uniformly; bare with probability BARE_SHARE, else in one of its wrappers."""
    variants = rng.choice(templates(kind, rel.name))
    template = variants[0] if rng.random() < BARE_SHARE else rng.choice(variants[1:])
    return template.format(e=name)


def documents() -> list[Document]:
    """The Q&A documents and conversations of every training entity in paraphrased questions."""
    docs = []
    for entity in world()["train"]:
        slug = entity.key.removeprefix("reading/")
        rng = random.Random(f"{READING_SEED}:para:{entity.key}")
        relations = list(KIND_BY_NAME[entity.kind].relations)
        for i in range(DOCS_PER_ENTITY):
            rng.shuffle(relations)
            qa = " ".join(
                f"{ask_paraphrase(entity.kind, rel, entity.name, rng)} {entity.facts[rel.name]}."
                for rel in relations
            )
            docs.append(
                Document(f"reading-qa/{slug}/para{i}", qa, source="reading-qa-para", title=entity.name)
            )
        turns = [rng.choice(TRAIN_SYSTEM_PROMPTS)]
        for rel in rng.sample(relations, rng.randint(1, 3)):
            turns += [ask_paraphrase(entity.kind, rel, entity.name, rng), f"{entity.facts[rel.name]}."]
        chat = " ".join(turns)
        docs.append(Document(f"reading-chat/{slug}/para", chat, source="reading-qa-para", title=entity.name))
    return docs


SOURCES = {
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "reading-qa-para:train": NamedSource(read=lambda skipped: documents()),
}
