"""Probe, no model: can MiniLM's *word* meanings tell which segment of a passage answers a question
worded in a way no training document uses? For each dev (or test) reading item of the given kinds,
the passage that states its answer is cut into segments (sentences, lines, record fields); each
segment is scored by how well its words cover the prompt's content words: sum over the prompt's
words q of max over the segment's words s of cos(MiniLM(q), MiniLM(s)), each word encoded alone.
Names, numbers and function words are left out (lower-case words only, a stop list), so the
invented names that dominated the seventh round's sentence similarity play no part. Prints the
share of items whose best segment holds the answer, beside the same with whole-sentence
similarity (names masked) and the chance rate.

    python probe_word_semantics.py dev
"""

import re
import sys

import numpy as np

from index.encoder import load_sentence_transformer
from index.reading import evaluation_set

_STOP_WORDS = (
    "a an the of in on at to for from by with and or is was were are be been did do does has have had "
    "what which who whom whose when where how many much year this that these it its their they them "
    "tell me name please give say state i you we us our your can could would like know about"
)
STOP = set(_STOP_WORDS.split())


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"\b[a-z]+\b", text) if w not in STOP and len(w) > 2]


def segments(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!])\s+|\n| \| ", text) if s.strip()]


def main(split: str, kinds=("question", "question_trained_form", "reworded")) -> None:
    model = load_sentence_transformer("cpu")
    cache: dict[str, np.ndarray] = {}

    def vec(ws: list[str]) -> np.ndarray:
        new = [w for w in set(ws) if w not in cache]
        if new:
            for w, v in zip(new, model.encode(new, normalize_embeddings=True), strict=True):
                cache[w] = v
        return np.stack([cache[w] for w in ws]) if ws else np.zeros((0, 384))

    def masked(t: str) -> str:
        return re.sub(r"\d[\d,]*", "N", re.sub(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b", "X", t))

    ev = evaluation_set(split)
    docs = {d.doc_id: d for d in ev.documents}
    for kind in kinds:
        by_words = by_sentence = chance = n = 0
        for item in (i for i in ev.items if i.kind == kind):
            segs = segments(docs[item.evidence[0]].text)
            gold = {i for i, s in enumerate(segs) if item.answer in s}
            q = vec(words(item.prompt))
            if not gold or not len(q):
                continue
            scores = [(q @ vec(words(s)).T).max(axis=1).sum() if words(s) else -1.0 for s in segs]
            by_words += int(np.argmax(scores)) in gold
            e = model.encode([masked(item.prompt)] + [masked(s) for s in segs], normalize_embeddings=True)
            by_sentence += int(np.argmax(e[1:] @ e[0])) in gold
            chance += len(gold) / len(segs)
            n += 1
        print(
            f"{split} {kind}: {n} items; best segment holds the answer: word meanings "
            f"{100 * by_words / n:.1f}%, sentence (names masked) {100 * by_sentence / n:.1f}%, "
            f"chance {100 * chance / n:.1f}%"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dev")
