"""The training-only reading material: never an evaluation word, only training families and forms."""

import hashlib
import json
import re
from dataclasses import asdict

from index.reading import HELDOUT_FAMILIES, evaluation_set, world
from index.reading_more import EXTRA_RELATIONS, documents, second_world
from index.reading_world import HELDOUT_QUESTION_FORMS
from index.sources import NAMED_SOURCES


def test_no_word_of_the_evaluation_entities_occurs_in_the_second_world():
    invented = set()
    for split in ("dev", "test"):
        for e in world()[split]:
            for text in (e.name, *e.facts.values(), *e.setting.values()):
                invented.update(re.findall(r"[A-Z][a-z]+", text))
    invented -= {"Works", "Trading", "Mills", "Foundry", "Sons"}  # fixed suffixes, not invented words
    words = set()
    for d in documents(("passages", "qa")):
        words.update(re.findall(r"[A-Za-z]+", d.text))
    assert invented and not invented & words


def test_only_training_families_and_forms_and_reading_doc_ids():
    docs = documents(("passages", "qa"))
    families = {d.doc_id.rsplit("/", 1)[1] for d in docs if d.source == "reading-more"}
    assert families == {"encyclopedia", "table", "list", "news"} and not families & set(HELDOUT_FAMILIES)
    text = " ".join(d.text for d in docs if d.source == "reading-more-qa")
    for entity, relations in second_world()[:40]:
        for rel in relations:
            for f in HELDOUT_QUESTION_FORMS:  # the extra relations repeat their trained forms there
                if rel not in EXTRA_RELATIONS[entity.kind]:
                    assert rel.questions[f].format(e=entity.name) not in text
    # the Q&A documents are reading material the recipe's read_prefix recognises
    assert all(
        d.doc_id.startswith(("reading-qa/", "reading-chat/")) for d in docs if d.source == "reading-more-qa"
    )
    assert {"reading-more:train", "reading-more-qa:train"} <= set(NAMED_SOURCES)


def test_each_entity_states_six_facts_in_its_table():
    entity, relations = second_world()[1]
    table = next(d for d in documents(("passages",)) if d.doc_id == f"{entity.key}/table")
    assert len(relations) == 6 and len(table.text.splitlines()) == 7
    assert all(entity.facts[r.name] in table.text for r in relations)


def test_the_reading_evaluation_sets_are_frozen():
    """The dev and test items and documents, byte for byte as first drawn (2026-12-01): training
    material added beside them (this module, render's relations) must never move them."""
    h = hashlib.sha256()
    for split in ("dev", "test"):
        ev = evaluation_set(split)
        rows = (
            [[d.doc_id, d.text] for d in ev.documents] + [asdict(i) for i in ev.items] + ev.removed_for_update
        )
        h.update(json.dumps(rows, sort_keys=True).encode())
    assert h.hexdigest() == "dc7fedcfc54d0b994a2c6f0cf917d19934dcc5b58253d1acfbb5b175eb2610d9"
