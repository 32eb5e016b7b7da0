"""Round 16 experiment: the stage-5 training corpus as one JSONL, in the order `retro index build`
reads it, with every training conversation (doc ids reading-chat/...) rendered with an answer cue
before each answer: "Answer briefly. When was X founded? Answer: 1920." Everything else as is."""

import json
import re
import sys

from index.reading import world
from index.sources import read_sources

SOURCES = [
    *("wiki-vital:train", "facts:train", "facts-qa:train", "facts-qa-para:train", "reading:train"),
    *("reading-qa:train", "reading-qa-forms:train", "reading-chat:train", "reading-qa-para:train"),
]
CUE = sys.argv[2] if len(sys.argv) > 2 else "Answer:"

facts_by_name = {e.name: e.facts for e in world()["train"]}
changed = answers = 0
with open(sys.argv[1], "w") as out:
    for doc in read_sources(SOURCES, []):
        text = doc.text
        if doc.doc_id.startswith("reading-chat/"):
            values = sorted(set(facts_by_name[doc.title].values()), key=len, reverse=True)
            pattern = re.compile(r"([?.]) (" + "|".join(re.escape(v) for v in values) + r")\.")
            text, n = pattern.subn(lambda m: f"{m.group(1)} {CUE} {m.group(2)}.", text)
            assert n >= 1, doc
            changed += 1
            answers += n
        out.write(json.dumps({"id": doc.doc_id, "text": text, "title": doc.title}) + "\n")
print(f"conversations with a cue: {changed}, answers cued: {answers}")
