"""Questions with the passage that answers them and where the answer starts: the span reader's
training examples (`retro.span_reader`, `retro.span_reader_train`).

Two sources, both training material only:

- **the reading set's training entities** (`index.reading`): a passage in a *training* family
  (encyclopedia, table, list, news) and a question in a training form or a paraphrase
  (`index.reading_paraphrase`, which shares no held-out trigram); a quarter of them get another
  training entity's passage instead, with no answer, so the reader learns to say "not here" (a
  serving neighbour is often another entity's passage). No held-out family, question form, or
  dev / test entity is ever in an example.
- **wiki-qa** (`index.wiki_qa`): rule-read questions over `wiki-vital:train` leads (the held-out
  entities' leads are left out, `index.leakage`), with the lead as the passage: real prose.

An example's answer start is the first occurrence of the answer in the passage (the reading set's
values are unique within a passage; a wiki fact's answer is what the lead writes). The order is
shuffled once by `seed`, so the same call gives the same list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from index.corpus import SkippedInput
from index.leakage import without_heldout_leads
from index.reading import TRAIN_FAMILIES, passage, world
from index.reading_paraphrase import ask_paraphrase
from index.reading_world import KIND_BY_NAME, TRAIN_QUESTION_FORMS
from index.wiki_qa import lead_facts, render
from index.wiki_vital import read_wiki_vital

NO_ANSWER_SHARE = 0.25  # reading questions asked of another entity's passage
PASSAGES_PER_RELATION = 2  # each relation of each training entity, asked against two families
WIKI_CONTEXT_CHARS = 1200  # a lead is cut here; a fact whose answer starts past 900 is skipped
WIKI_ANSWER_BEFORE = 900


@dataclass(frozen=True)
class SpanExample:
    question: str
    context: str
    answer: str | None  # None: the context does not answer the question
    start: int | None = None  # the answer's first character in `context`


def reading_examples(rng: random.Random) -> Iterator[SpanExample]:
    entities = world()["train"]
    for entity in entities:
        for rel in KIND_BY_NAME[entity.kind].relations:
            value = entity.facts[rel.name]
            for _ in range(PASSAGES_PER_RELATION):
                family = rng.choice(TRAIN_FAMILIES)
                if rng.random() < 0.5:
                    question = rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)
                else:
                    question = ask_paraphrase(entity.kind, rel, entity.name, rng)
                if rng.random() < NO_ANSWER_SHARE:
                    other = rng.choice(entities)
                    if other is not entity:
                        yield SpanExample(question, passage(other, rng.choice(TRAIN_FAMILIES)).text, None)
                    continue
                text = passage(entity, family).text
                start = text.find(value)
                if start >= 0:
                    yield SpanExample(question, text, value, start)


def wiki_examples(rng: random.Random, skipped: list[SkippedInput]) -> Iterator[SpanExample]:
    for doc in without_heldout_leads(read_wiki_vital(skipped)):
        subject, person, facts = lead_facts(doc.title or doc.doc_id, doc.text)
        for fact in facts:
            qa = render(fact, subject, person, rng)  # "<question> <answer>."
            if not qa:
                continue
            question = qa[: -(len(fact.answer) + 2)]
            start = doc.text.find(fact.answer)
            if 0 <= start < WIKI_ANSWER_BEFORE:
                yield SpanExample(question, doc.text[:WIKI_CONTEXT_CHARS], fact.answer, start)


def span_examples(seed: int = 22, wiki: bool = True) -> list[SpanExample]:
    """Every example, shuffled by `seed`; `wiki=False` leaves wiki-qa out (tests: no wiki-vital file)."""
    rng = random.Random(seed)
    examples = list(reading_examples(rng))
    if wiki:
        skipped: list[SkippedInput] = []
        examples += wiki_examples(rng, skipped)
    rng.shuffle(examples)
    return examples
