"""Update training material: a passage, a later notice that changes one of its facts, and questions
whose answer is the notice's value.

The demo reader of 2026-12-06 answered the reading set's update items (an indexed passage and a
later notice changing one of its values, both retrieved) with the *old* value a third of the time
on dev: no training document ever had two neighbours that disagree, so nothing taught it which one
to read. This module gives training that situation, in training wordings only:

- **Entities**: the last `SIZE` entities of the second world (`index.reading_more.second_world`),
  whose invented words never coincide with the reading set's, so no evaluation name or value occurs
  here. (`reading-more:train` renders the same entities with their old values and no notice: the
  two sources are alternatives, not to be combined in one index.)
- **Passages**: one per entity, in one training family (`index.reading.render`), stating the old
  values; doc ids `reading-upd/<slug>/<family>`.
- **Notices**: one per entity, dated, restating one relation with a new value drawn from another
  entity of its kind, in the wordings of `NOTICES`; doc id `reading-upd/<slug>/notice`. None of them
  shares a word trigram with the evaluation's update notices (`EVALUATION_NOTICE_WORDS`, checked in
  tests/index/test_reading_updates.py).
- **Questions** (training material: doc ids under `reading-qa/` and `reading-chat/`, so
  `Recipe.read_prefix` treats them as the reading set's other Q&A documents and
  `Recipe.passage_neighbours` gives them the passage and the notice as neighbours): one document
  asking every relation in a training question form, the changed one answered with the new value,
  and one conversation in the chat template asking the changed relation.

Named sources (`SOURCES`): `reading-upd:train` (passages and notices: knowledge an index may serve)
and `reading-upd-qa:train` (questions and answers). It never imports `retro`.

Measured (2026-12-06, docs/results/cpu-demo-reading13-2026-12-06): added to the demo's stage-5
training, two seeds, the reader got worse everywhere (dev held-out-form questions 68.8% -> 54.2% for
seed 0) and the updates did not move; the demo does not use it.
"""

from __future__ import annotations

import random
from functools import lru_cache

from index.corpus import Document, NamedSource
from index.reading import SEED as READING_SEED
from index.reading import TRAIN_FAMILIES, TRAIN_SYSTEM_PROMPTS, lower_first, render
from index.reading_more import second_world
from index.reading_world import TRAIN_QUESTION_FORMS, Relation, WorldEntity

SIZE = 1200
SEED = 20261206
MONTHS = ("January", "March", "April", "June", "July", "September", "October", "November")
YEARS = tuple(y for y in range(2019, 2032) if y != 2026)  # the evaluation's notices are dated 2026
# {date} "March 2029", {sentence} the relation's sentence with the new value, {lower} the same with a
# lower-case first word ("the town ..."); wordings of our own, none of the evaluation's
NOTICES = (
    "Revised entry ({date}): {sentence} The older figure no longer holds.",
    "Amended in {date}. {sentence} This replaces what was printed before.",
    "Notice of change, {date}: {sentence}",
    "From the {date} edition: {sentence} Older editions gave another answer.",
    "Late news ({date}). It has since been confirmed that {lower}",
    "As of {date}, the register was put right: {sentence}",
)
# the evaluation's update notices (index.reading.evaluation_set) without their relation sentence
EVALUATION_NOTICE_WORDS = (
    "Update, {month} 2026: new records show that",
    "Correction ({month} 2026):",
    "Earlier sources were wrong.",
)


def _question(rel: Relation, entity: WorldEntity, rng: random.Random) -> str:
    return rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)


@lru_cache(maxsize=1)
def updates() -> list[tuple[WorldEntity, tuple[Relation, ...], Relation, str]]:
    """(entity, its relations, the relation a notice changes, the new value) for `SIZE` entities."""
    world = second_world()
    chosen = world[-SIZE:]
    rng = random.Random(f"{SEED}:updates")
    out = []
    for entity, relations in chosen:
        rel = rng.choice(relations)
        old = entity.facts[rel.name]
        others = [e.facts[rel.name] for e, _ in world if e.kind == entity.kind and e.facts[rel.name] != old]
        out.append((entity, relations, rel, rng.choice(others)))
    return out


def notice(entity: WorldEntity, rel: Relation, value: str, rng: random.Random) -> str:
    """A dated notice restating `rel` of `entity` with `value`."""
    sentence = rel.sentence.format(e=entity.name, v=value)
    date = f"{rng.choice(MONTHS)} {rng.choice(YEARS)}"
    return rng.choice(NOTICES).format(date=date, sentence=sentence, lower=lower_first(sentence))


def documents(kinds: tuple[str, ...]) -> list[Document]:
    """Passages and notices (`"passages"`), or the questions and conversations (`"qa"`)."""
    docs = []
    for entity, relations, changed, new_value in updates():
        slug = entity.key.removeprefix("reading/")
        rng = random.Random(f"{READING_SEED}:{SEED}:{entity.key}")
        family = rng.choice(TRAIN_FAMILIES)
        passage = render(entity, family, rng, relations).text()
        text = notice(entity, changed, new_value, rng)
        if "passages" in kinds:
            docs.append(
                Document(f"reading-upd/{slug}/{family}", passage, source="reading-upd", title=entity.name)
            )
            docs.append(Document(f"reading-upd/{slug}/notice", text, source="reading-upd", title=entity.name))
        if "qa" in kinds:
            answers = entity.facts | {changed.name: new_value}
            order = list(relations)
            rng.shuffle(order)
            qa = " ".join(f"{_question(rel, entity, rng)} {answers[rel.name]}." for rel in order)
            docs.append(Document(f"reading-qa/upd/{slug}", qa, source="reading-upd-qa", title=entity.name))
            turns = [rng.choice(TRAIN_SYSTEM_PROMPTS), _question(changed, entity, rng), f"{new_value}."]
            docs.append(
                Document(
                    f"reading-chat/upd/{slug}", " ".join(turns), source="reading-upd-qa", title=entity.name
                )
            )
    return docs


SOURCES = {
    "reading-upd:train": NamedSource(read=lambda skipped: documents(("passages",))),
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "reading-upd-qa:train": NamedSource(read=lambda skipped: documents(("qa",))),
}
