"""Round 22 probe data: (question, context, answer) triples for an extractive reader over MiniLM.

Training: the reading set's training entities (training families, training question forms and the
paraphrase templates) and wiki-qa's rule-read questions over wiki-vital:train leads; a quarter of
the reading questions get another entity's passage (no answer). Evaluation: reading dev items with
their held-out-family passage, and the hand-written fresh dev passages."""

import json
import random
import sys

sys.path.insert(0, "/work/main")
from index.leakage import without_heldout_leads  # noqa: E402
from index.reading import TRAIN_FAMILIES, evaluation_set, passage, world  # noqa: E402
from index.reading_paraphrase import _ask  # noqa: E402
from index.reading_world import KIND_BY_NAME, TRAIN_QUESTION_FORMS  # noqa: E402
from index.wiki_qa import lead_facts, render  # noqa: E402
from index.wiki_vital import read_wiki_vital  # noqa: E402

rng = random.Random(22)
train = []
entities = world()["train"]
for entity in entities:
    for rel in KIND_BY_NAME[entity.kind].relations:
        value = entity.facts[rel.name]
        for _ in range(2):
            family = rng.choice(TRAIN_FAMILIES)
            text = passage(entity, family).text
            if rng.random() < 0.5:
                q = rel.questions[rng.choice(TRAIN_QUESTION_FORMS)].format(e=entity.name)
            else:
                q = _ask(entity.kind, rel, entity.name, rng)
            if rng.random() < 0.25:
                other = rng.choice(entities)
                if other is not entity:
                    train.append({"q": q, "c": passage(other, rng.choice(TRAIN_FAMILIES)).text, "a": None})
                continue
            start = text.find(value)
            if start >= 0:
                train.append({"q": q, "c": text, "a": value, "s": start})
n_reading = len(train)
skipped = []
for doc in without_heldout_leads(read_wiki_vital(skipped)):
    subject, person, facts = lead_facts(doc.title or doc.doc_id, doc.text)
    for fact in facts:
        qa = render(fact, subject, person, rng)
        if not qa:
            continue
        question = qa[: -(len(fact.answer) + 2)]
        start = doc.text.find(fact.answer)
        if start >= 0 and start < 900:
            train.append({"q": question, "c": doc.text[:1200], "a": fact.answer, "s": start})
print("train", len(train), "reading", n_reading, file=sys.stderr)
rng.shuffle(train)
with open("ext-train.jsonl", "w") as f:
    for t in train:
        f.write(json.dumps(t) + "\n")

ev = evaluation_set("dev")
docs = {d.doc_id: d.text for d in ev.documents}
with open("ext-dev.jsonl", "w") as f:
    for it in ev.items:
        if it.kind not in ("question", "reworded", "prefix", "long") or not it.evidence:
            continue
        row = {"kind": it.kind, "q": it.prompt, "c": docs[it.evidence[0]], "a": it.answer}
        f.write(json.dumps(row) + "\n")
with (
    open("ext-fresh-dev.jsonl", "w") as f,
    open("/work/main/benchmarks/data/fresh_passages_dev.jsonl") as src,
):
    for line in src:
        p = json.loads(line)
        for q in p["questions"]:
            f.write(json.dumps({"kind": "fresh", "q": q["prompt"], "c": p["text"], "a": q["answer"]}) + "\n")
