"""Long-prompt training material: a question about "this company" asked a few sentences after the
company is named, with unrelated sentences in between.

The demo reader of 2026-12-06 answered the reading set's long prompts ("I am writing a short
report about X." + three sentences about the writer's week + a held-out question about "this
company") 15% of the time on dev, and mostly with general-text drift ("the term is used for..."):
no training document ever put a question after chatter, or asked about an entity by "this
company" more than a few words after naming it. This module writes such prompts for the reading
set's training entities, in training wordings only:

- a lead-in that names the entity (`LEAD_INS`, none the evaluation's),
- two or three sentences that say nothing about it (`FILLERS`, none sharing a word trigram with the
  evaluation's fillers, checked in tests/index/test_reading_long.py),
- a question in a training form (`TRAIN_QUESTION_FORMS`) with the entity named as "this person",
  "this town", "this company" or "this insect", and its answer.

Two such blocks per entity (two relations) make one document `reading-qa/long/<slug>`, under the
reading set's Q&A prefix so `Recipe.read_prefix` treats it as reading material and
`Recipe.passage_neighbours` gives it the entity's passages as neighbours; with
`Recipe.read_query_chunks` 3 those are found by the block's lead-in as the service finds them by a
long prompt's first sentence. Named source `reading-qa-long:train`. It never imports `retro`.

Measured (2026-12-06, docs/results/cpu-demo-reading13-2026-12-06): with `read_query_chunks` 3 in the
demo's stage-5 training, two seeds, long prompts rose for one seed only (dev 12.5% -> 22.2%) and
held-out-form questions fell for both; the demo does not use it.
"""

from __future__ import annotations

import random

from index.corpus import Document, NamedSource
from index.reading import SEED as READING_SEED
from index.reading import THIS_REFERENCE, world
from index.reading_world import KIND_BY_NAME, TRAIN_QUESTION_FORMS, WorldEntity

BLOCKS_PER_DOC = 2
LEAD_INS = (
    "These are my notes on {e}.",
    "Our class project this term is about {e}.",
    "I have been reading up on {e} lately.",
    "My grandmother often talked about {e}.",
    "For the museum guide I need details on {e}.",
    "Someone asked me about {e} yesterday.",
)
FILLERS = (
    "The bus was late again this morning, so I started without coffee.",
    "Most of what I found came from an old box of papers in the attic.",
    "My neighbour lent me a lamp because the light in my room is poor.",
    "I still have two chapters of another book to finish before Monday.",
    "The archive was quiet, apart from a clock ticking on the wall.",
    "Someone had underlined half the pages in pencil, which did not help.",
    "I keep losing track of which notebook holds which page.",
    "It rained all afternoon, and the roof of the shed leaks again.",
)


def block(entity: WorldEntity, relation_index: int, rng: random.Random) -> tuple[str, str]:
    """(prompt, answer): a lead-in naming `entity`, fillers, and a training-form question about it."""
    rel = KIND_BY_NAME[entity.kind].relations[relation_index]
    question = rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=THIS_REFERENCE[entity.kind])
    prompt = " ".join(
        [
            rng.choice(LEAD_INS).format(e=entity.name),
            *rng.sample(FILLERS, rng.randint(2, 3)),
            question[:1].upper() + question[1:],
        ]
    )
    return prompt, entity.facts[rel.name]


def documents() -> list[Document]:
    docs = []
    for entity in world()["train"]:
        rng = random.Random(f"{READING_SEED}:long:{entity.key}")
        slug = entity.key.removeprefix("reading/")
        relations = rng.sample(range(len(KIND_BY_NAME[entity.kind].relations)), BLOCKS_PER_DOC)
        blocks = [block(entity, i, rng) for i in relations]
        text = "\n".join(f"{prompt} {answer}." for prompt, answer in blocks)
        docs.append(Document(f"reading-qa/long/{slug}", text, source="reading-qa-long", title=entity.name))
    return docs


SOURCES = {
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "reading-qa-long:train": NamedSource(read=lambda skipped: documents()),
}
