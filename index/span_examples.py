"""Questions with the passage that answers them and where the answer starts: the span reader's
training examples (`retro.span_reader`, `retro.span_reader_train`).

Training material only, from these sources:

- **the reading set's training entities** (`index.reading`): a passage in a *training* family
  (encyclopedia, table, list, news) and a question in a training form or a paraphrase
  (`index.reading_paraphrase`, which shares no held-out trigram); a quarter of them get another
  training entity's passage instead, with no answer, so the reader learns to say "not here" (a
  serving neighbour is often another entity's passage). No held-out family, question form, or
  dev / test entity is ever in an example.
- **completions** of the same training entities (added 2026-12-07, twenty-third round): the
  passage's own prefix up to the value (a word-for-word prefix prompt) or a completion paraphrase
  (`index.reading_completions`, checked against every held-out wording), a quarter against another
  entity's passage with no answer;
- **updates** (`index.reading_updates`, the second world's entities, training notice wordings): a
  question about the changed relation with the notice (new value) and the old passage read side by
  side, the notice holding the answer; or a question about another relation, the passage holding
  it and the notice beside it;
- **wiki-qa** (`index.wiki_qa`): rule-read questions over `wiki-vital:train` leads (the held-out
  entities' leads are left out, `index.leakage`), with the lead as the passage: real prose; and the
  lead's own text up to a fact's answer as a completion prompt;
- **facts** (opt-in, `facts=True`; not in the reader shipped by the twenty-third round): the
  training countries' and elements' fact pairs (`index.facts`, split "train": no held-out entity),
  as question or completion, against one of the entity's own fact documents, a quarter against
  another training entity's with no answer. The reader of round 23, trained without them, overrode
  the decoder on calling codes and currencies ("+NN" values it never saw).

**Distractors**: generation reads a prompt against its k neighbours with one softmax over all of
them (`retro.span_reader.start_probabilities`), and a serving neighbour is often another entity's
passage. Half the reading examples carry another training entity's passage as a distractor, read
with the same question and sharing the softmax (`retro.span_reader_train.loss_of`).

An example's answer start is the first occurrence of the answer in the passage (the reading set's
values are unique within a passage; a wiki fact's answer is what the lead writes). The order is
shuffled once by `seed`, so the same call gives the same list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from index.corpus import SkippedInput
from index.facts import entities_of, entity_documents
from index.facts import fact_pairs as facts_of_split
from index.leakage import without_heldout_leads
from index.reading import TRAIN_FAMILIES, passage, world
from index.reading_completions import complete_paraphrase
from index.reading_paraphrase import NOUN_PHRASES, ask_paraphrase
from index.reading_updates import documents as update_documents
from index.reading_updates import updates
from index.reading_world import KIND_BY_NAME, TRAIN_QUESTION_FORMS, Relation, WorldEntity
from index.wiki_qa import lead_facts, render
from index.wiki_vital import read_wiki_vital

NO_ANSWER_SHARE = 0.25  # reading questions asked of another entity's passage
PASSAGES_PER_RELATION = 2  # each relation of each training entity, asked against two families
WIKI_CONTEXT_CHARS = 1200  # a lead is cut here; a fact whose answer starts past 900 is skipped
WIKI_ANSWER_BEFORE = 900
DISTRACTOR_SHARE = 0.5  # reading examples read beside another entity's passage


@dataclass(frozen=True)
class SpanExample:
    question: str
    context: str
    answer: str | None  # None: the context does not answer the question
    start: int | None = None  # the answer's first character in `context`
    distractors: tuple[str, ...] = ()  # more contexts read with the question, none of them answering


def _ask(entity: WorldEntity, rel: Relation, rng: random.Random) -> str:
    """A training question form or (where the relation has them) a paraphrase, half and half."""
    if rng.random() < 0.5 and (entity.kind, rel.name) in NOUN_PHRASES:
        return ask_paraphrase(entity.kind, rel, entity.name, rng)
    return rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)


def _distractors(entity: WorldEntity, entities: list[WorldEntity], rng: random.Random) -> tuple[str, ...]:
    other = rng.choice(entities)
    if other is entity or rng.random() >= DISTRACTOR_SHARE:
        return ()
    return (passage(other, rng.choice(TRAIN_FAMILIES)).text,)


def reading_examples(rng: random.Random) -> Iterator[SpanExample]:
    entities = world()["train"]
    for entity in entities:
        for rel in KIND_BY_NAME[entity.kind].relations:
            value = entity.facts[rel.name]
            for _ in range(PASSAGES_PER_RELATION):
                family = rng.choice(TRAIN_FAMILIES)
                question = _ask(entity, rel, rng)
                distractors = _distractors(entity, entities, rng)
                if rng.random() < NO_ANSWER_SHARE:
                    other = rng.choice(entities)
                    if other is not entity:
                        text = passage(other, rng.choice(TRAIN_FAMILIES)).text
                        yield SpanExample(question, text, None, None, distractors)
                    continue
                text = passage(entity, family).text
                start = text.find(value)
                if start >= 0:
                    yield SpanExample(question, text, value, start, distractors)


def completion_examples(rng: random.Random) -> Iterator[SpanExample]:
    """Each relation of each training entity once as a completion: the passage's own prefix (half)
    or a completion paraphrase, against its passage or (a quarter) another entity's."""
    entities = world()["train"]
    for entity in entities:
        for rel in KIND_BY_NAME[entity.kind].relations:
            p = passage(entity, rng.choice(TRAIN_FAMILIES))
            if rng.random() < 0.5:
                prompt = p.prefixes[rel.name]
            else:
                prompt = complete_paraphrase(entity.kind, rel.name, entity.name, rng)
            distractors = _distractors(entity, entities, rng)
            if rng.random() < NO_ANSWER_SHARE:
                other = rng.choice(entities)
                if other is not entity:
                    yield SpanExample(
                        prompt, passage(other, rng.choice(TRAIN_FAMILIES)).text, None, None, distractors
                    )
                continue
            start = p.text.find(entity.facts[rel.name])
            if start >= 0:
                yield SpanExample(prompt, p.text, entity.facts[rel.name], start, distractors)


def update_examples(rng: random.Random) -> Iterator[SpanExample]:
    """The second world's updated entities: the passage (old values) and the notice (one new value)
    read side by side; asked the changed relation the notice answers, asked another the passage."""
    docs = update_documents(("passages",))  # per entity: its passage, then its notice
    for (entity, relations, changed, new_value), old, notice in zip(
        updates(), docs[::2], docs[1::2], strict=True
    ):
        start = notice.text.find(new_value)
        if start >= 0:
            yield SpanExample(_ask(entity, changed, rng), notice.text, new_value, start, (old.text,))
        rel = rng.choice([r for r in relations if r.name != changed.name])
        start = old.text.find(entity.facts[rel.name])
        if start >= 0:
            yield SpanExample(_ask(entity, rel, rng), old.text, entity.facts[rel.name], start, (notice.text,))


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
                if start > 0 and rng.random() < 0.5:  # the lead up to the answer: a completion
                    yield SpanExample(doc.text[:start], doc.text[:WIKI_CONTEXT_CHARS], fact.answer, start)


def fact_examples(rng: random.Random) -> Iterator[SpanExample]:
    """The training entities' fact pairs against their own fact documents (or, a quarter, another
    training entity's, with no answer); question or completion, half and half."""
    documents = {e.key: [d.text for d in entity_documents(e)] for e in entities_of("train")}
    keys = sorted(documents)
    for pair in facts_of_split("train"):
        prompt = pair.question if rng.random() < 0.5 else pair.completion
        if rng.random() < NO_ANSWER_SHARE:
            other = rng.choice(keys)
            if other != pair.entity:
                yield SpanExample(prompt, rng.choice(documents[other]), None)
            continue
        holding = [text for text in documents[pair.entity] if pair.answer in text]
        if holding:
            text = rng.choice(holding)
            yield SpanExample(prompt, text, pair.answer, text.find(pair.answer))


def span_examples(seed: int = 22, wiki: bool = True, facts: bool = False) -> list[SpanExample]:
    """Every example, shuffled by `seed`; `wiki=False` leaves wiki-qa out (tests: no wiki-vital
    file); `facts=True` adds `fact_examples` (drawn last, so the other examples stay as they were)."""
    rng = random.Random(seed)
    examples = list(reading_examples(rng)) + list(completion_examples(rng)) + list(update_examples(rng))
    if wiki:
        skipped: list[SkippedInput] = []
        examples += wiki_examples(rng, skipped)
    if facts:
        examples += fact_examples(rng)
    rng.shuffle(examples)
    return examples
