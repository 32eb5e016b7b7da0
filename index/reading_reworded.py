"""Reworded statements for training: each reading relation said in words its passages never use,
followed by the value, so the reader learns to complete a statement whose wording is not the
passage's.

The demo reader of 2026-12-04 completed the reading set's reworded prompts ("The childhood home
of X was the town of") 13.8% of the time on test, though the answer's passage was among its
neighbours for 93% of them and the value was shown for 74%: given the value shown it said it
first 18.5% of the time. Nothing in training asked it to: every trained completion was a
word-for-word prefix of a passage (which it copies, 92%) and every trained question ended in "?".
Typical answers continued the prompt as text ("..., more precisely? Latin America") or copied the
words that follow the entity's name in the passage.

`TRAIN_REWORDED` gives every relation of the reading set four statements of its own, checked
when the module is used (`check_reworded`, and tests/index/test_reading_reworded.py):

- no statement shares a content word with the relation's passage sentence ("{e} was born in
  {v}." -> "born" never occurs): the value must be read from a passage worded otherwise;
- no statement says a held-out question form or reworded prompt of its relation
  (`index.reading_paraphrase.check_template`: no word trigram of theirs that the training
  question forms lack, not one of them with its first word changed): the evaluation's reworded
  prompts and held-out forms stay unseen.

Named source `reading-rew:train`: per training entity `DOCS_PER_ENTITY` documents, each stating
every relation once in a drawn statement ("The life of X began in the year 1745. ..."), doc ids
`reading-qa/<slug>/rew<i>`, so that `Recipe.read_prefix` reads their values from the entity's
passages and `Recipe.passage_neighbours` never shows them as neighbours. Training material only:
no serving index holds them. It never imports `retro`.
"""

from __future__ import annotations

import random
import re
from functools import cache

from index.corpus import Document, NamedSource
from index.reading import SEED as READING_SEED
from index.reading import world
from index.reading_paraphrase import check_template
from index.reading_world import KIND_BY_NAME, Relation

DOCS_PER_ENTITY = 4

# (kind, relation) -> statements that end where the value follows
TRAIN_REWORDED: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "born"): ("The life of {e} began in the year", "Parish records place the birth of {e} in",
                         "{e} first saw daylight in", "The arrival of baby {e} was recorded in"),
    ("person", "hometown"): ("The young {e} was raised in", "{e} spent the early years in",
                             "During the school years of {e}, the family's town was",
                             "Before leaving home, {e} stayed in"),
    ("person", "trade"): ("{e} earned wages as a", "In the trade register, {e} is listed as a",
                          "The job {e} held was that of a", "Neighbours knew {e} as a skilled"),
    ("person", "mentor"): ("{e} studied under", "The teacher who trained {e} was",
                           "Lessons for the young {e} came from", "{e} was an apprentice of"),
    ("town", "founded"): ("{e} was settled in", "The first houses of {e} were built in",
                          "The charter of {e} was granted in", "Settlers put up the first walls of {e} in"),
    ("town", "mayor"): ("{e} elected as its leader", "The town hall in {e} is run by",
                        "The civic leader of {e} today is", "At the head of the government of {e} stands"),
    ("town", "known_for"): ("{e} draws crowds with its", "Travellers remember {e} for its",
                            "{e} takes pride in its", "People across the region praise {e} for its"),
    ("town", "population"): ("The people of {e} number", "Today {e} is a town of",
                             "A recent survey put the size of {e} at", "The townsfolk of {e} total"),
    ("company", "founded"): ("{e} began trading in", "The first sale of {e} was made in",
                             "{e} has been in business since", "The story of {e} starts in"),
    ("company", "founder"): ("{e} was set up by", "The creator of {e} was",
                             "{e} began in a small workshop run by", "The name behind {e} is"),
    ("company", "product"): ("{e} is a maker of", "The goods sold by {e} are",
                             "The factory of {e} produces", "Shops stock the {e} range of"),
    ("company", "headquarters"): ("{e} keeps its main office in", "The directors of {e} meet in",
                                  "Letters to {e} are sent to", "The offices of {e} are found in"),
    ("species", "food"): ("{e} eats mainly", "Field notes say {e} survives on",
                          "What {e} needs to eat is", "{e} is often seen eating"),
    ("species", "habitat"): ("{e} makes its home in", "You can find {e} in",
                             "The surroundings that suit {e} are", "Collectors have caught {e} in"),
    ("species", "length"): ("At full size, {e} is", "In mm, the adult body of {e} comes to",
                            "Grown up, {e} spans", "A mature {e} can reach"),
    ("species", "discovered"): ("The earliest note of {e} dates from",
                                "{e} was described for science in",
                                "Collectors have written about {e} since",
                                "The oldest mention of {e} is from"),
}  # fmt: skip

# words a statement may share with the passage sentence: they say nothing of the relation
FUNCTION_WORDS = frozenset(
    ("a", "an", "the", "of", "in", "on", "to", "by", "for", "from", "as", "at", "and", "is", "was", "has",
     "had", "its", "it", "this", "that", "be", "are", "were")
)  # fmt: skip


def _content_words(template: str) -> set[str]:
    words = re.findall(r"[a-z]+", template.replace("{e}", " ").replace("{v}", " ").lower())
    return {w for w in words if w not in FUNCTION_WORDS and w != "s"}


def check_reworded(template: str, rel: Relation) -> None:
    """Raise ValueError if `template` shares a content word with `rel`'s passage sentence, or
    says a held-out question form or reworded prompt of `rel` (`check_template`)."""
    shared = _content_words(template) & _content_words(rel.sentence)
    if shared:
        raise ValueError(f"{template!r} shares {sorted(shared)} with the passage sentence {rel.sentence!r}")
    if not template.rstrip().endswith(tuple("abcdefghijklmnopqrstuvwxyz")):
        raise ValueError(f"{template!r} must end in a word, where the value follows")
    check_template(template, rel)


@cache
def statements(kind: str, relation: str) -> tuple[str, ...]:
    """The checked training statements of one relation."""
    rel = next(r for r in KIND_BY_NAME[kind].relations if r.name == relation)
    out = TRAIN_REWORDED[(kind, relation)]
    for template in out:
        check_reworded(template, rel)
    return out


def documents() -> list[Document]:
    """`DOCS_PER_ENTITY` documents per training entity, each every relation once, reworded."""
    docs = []
    for entity in world()["train"]:
        slug = entity.key.removeprefix("reading/")
        rng = random.Random(f"{READING_SEED}:rew:{entity.key}")
        relations = list(KIND_BY_NAME[entity.kind].relations)
        for i in range(DOCS_PER_ENTITY):
            rng.shuffle(relations)
            text = " ".join(
                f"{rng.choice(statements(entity.kind, rel.name)).format(e=entity.name)} "
                f"{entity.facts[rel.name]}."
                for rel in relations
            )
            docs.append(Document(f"reading-qa/{slug}/rew{i}", text, source="reading-rew", title=entity.name))
    return docs


SOURCES = {
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "reading-rew:train": NamedSource(read=lambda skipped: documents()),
}
