"""More training style families (index.reading_styles): every training entity in each, every value
stated, no held-out family's fixed words, and no evaluation entity."""

import re

import pytest

from index.corpus import Document
from index.reading import training_documents, world
from index.reading_styles import HELDOUT_PHRASES, STYLE_FAMILIES, check_styles, documents


def test_each_training_entity_is_written_in_each_family_with_every_value():
    docs = {d.doc_id: d for d in documents()}
    entities = world()["train"]
    assert len(docs) == len(entities) * len(STYLE_FAMILIES)
    for entity in entities[:50]:
        for family in STYLE_FAMILIES:
            doc = docs[f"{entity.key}/{family}"]
            assert doc.title == entity.name and entity.name in doc.text
            assert all(value in doc.text for value in entity.facts.values()), doc.text
    passages = {d.doc_id for d in training_documents(("passages",))}
    assert not passages & set(docs)  # new passages, beside the four training families'


def test_no_document_holds_a_held_out_familys_words_or_an_evaluation_entity():
    texts = [d.text for d in documents()]
    assert not any(p in t for p in HELDOUT_PHRASES for t in texts)
    words = set(re.findall(r"[\w'-]+", "\n".join(texts)))  # whole words: "Klila" is in "Klilaen"
    for split in ("dev", "test"):
        assert not [e.name for e in world()[split] if set(e.name.split()) <= words]
    # the check itself refuses such a document
    with pytest.raises(ValueError, match="Anything more"):
        check_styles([Document("x/interview", "Interviewer: Anything more?", "reading")])
