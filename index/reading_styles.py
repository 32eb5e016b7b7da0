"""More style families for training: the reading set's training entities in three styles that are
neither its four training families nor its three held-out ones.

The demo reader of 2026-12-07 reads a passage in a held-out family worse the further its style is
from the four it was trained on (dev held-out-form questions: records 80%, letters 69%, dialogues
61%): every training passage is prose, a table or a list. Whether more *kinds* of passage in
training help it read the unseen ones is what this source measures (docs/design.md, seventeenth
round). Each family here is written in words of its own:

- `interview`: turns of an interviewer and a guest ("Interviewer: ...", "Guest: ..."), the guest
  stating one relation a turn after a lead-in, the interviewer prompting between turns;
- `notebook`: a dated notebook entry, each relation after an aside ("It turns out that ...");
- `card`: an index card, one "Label — value" line per relation under a starred name.

Turn-taking and first-person prose are the structures of the held-out dialogue and letter
families; their wordings are not: `check_styles` (run when the documents are made, and by
tests/index/test_reading_styles.py) refuses any document that holds one of the held-out families'
fixed phrases (`HELDOUT_PHRASES`). The relation sentences are the training families' own.

Named source `reading-styles:train`: per training entity one passage in each family, doc ids
`reading/train/<kind>/<slug>/<family>` (passages, like `reading:train`'s, so a Q&A document's
training neighbours may be one of them), title the entity's name. Training material for this
measurement: the demo's serving index does not hold them. It never imports `retro`.
"""

from __future__ import annotations

import random
from functools import cache

from index.corpus import Document, NamedSource
from index.reading import SEED, _relations, _say, _Writer, lower_first, world
from index.reading_world import WorldEntity

STYLE_FAMILIES = ("interview", "notebook", "card")

# The fixed words of the held-out families (index.reading.render: dialogue, letter, record): no
# document here may hold one.
HELDOUT_PHRASES = (
    "Have you heard of", "Oh, I know that one", "If I remember right", "Yes!", "My aunt says",
    "What else?", "And?", "Go on.", "Anything more?", "Dear ", "last week I finally went",
    "as I had promised", "The guide told us that", "the guide told us that", "I learned that",
    "Someone mentioned that", "With love", " | ", "record ", "name: ",
)  # fmt: skip

_PROMPTS = ("Tell us more.", "Please continue.", "What comes next?", "Interesting. Keep going.")
_LEADS = ("Well, ", "People here say that ", "From the archives: ", "To put it simply, ")
_ASIDES = ("It turns out that ", "According to the museum, ", "Apparently ", "Worth noting: ")
_MONTHS = ("Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Oct.", "Nov.", "Dec.")


def render_style(entity: WorldEntity, family: str, rng: random.Random) -> str:
    """One passage about `entity` in a style family of this module."""
    facts = entity.facts
    relations = list(_relations(entity))
    rng.shuffle(relations)
    if family == "interview":
        w = _Writer("\n")
        w.add(f"Interviewer: Thank you for speaking with us about {entity.name}.")
        w.add("Guest: Gladly.")
        for i, rel in enumerate(relations):
            lead = rng.choice(_LEADS)
            sentence = _say(rel.sentence, entity, facts[rel.name], refer=i > 0)
            w.add(f"Guest: {lead}{lower_first(sentence) if lead.endswith('that ') else sentence}")
            if i < len(relations) - 1:
                w.add(f"Interviewer: {rng.choice(_PROMPTS)}")
        return w.text()
    if family == "notebook":
        w = _Writer(" ")
        w.add(f"Notebook, {rng.choice(_MONTHS)} {rng.randint(1, 28)}.")
        w.add(f"Spent the afternoon reading about {entity.name}.")
        for i, rel in enumerate(relations):
            sentence = _say(rel.sentence, entity, facts[rel.name], refer=i > 0 and rng.random() < 0.6)
            aside = rng.choice(_ASIDES)
            w.add(aside + (sentence if aside.endswith(": ") else lower_first(sentence)))
        w.add("More tomorrow.")
        return w.text()
    if family == "card":
        w = _Writer("\n")
        w.add(f"* {entity.name} *")
        for rel in relations:
            w.add(f"{rel.label} — {facts[rel.name]}")
        return w.text()
    raise ValueError(f"unknown style family {family!r}; families: {', '.join(STYLE_FAMILIES)}")


def check_styles(docs: list[Document]) -> None:
    """Raises ValueError naming the first document that holds a held-out family's fixed phrase."""
    for doc in docs:
        found = [p for p in HELDOUT_PHRASES if p in doc.text]
        if found:
            raise ValueError(f"{doc.doc_id} holds the held-out phrase(s) {found}")


@cache
def documents() -> tuple[Document, ...]:
    docs = []
    for entity in world()["train"]:
        slug = entity.key.removeprefix("reading/")
        for family in STYLE_FAMILIES:
            rng = random.Random(f"{SEED}:styles:{entity.key}:{family}")
            text = render_style(entity, family, rng)
            docs.append(Document(f"reading/{slug}/{family}", text, source="reading", title=entity.name))
    check_styles(docs)
    return tuple(docs)


SOURCES = {
    "reading-styles:train": NamedSource(read=lambda skipped: list(documents())),
}
