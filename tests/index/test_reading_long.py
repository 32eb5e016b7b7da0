"""The long-prompt training material: none of the evaluation's long-prompt wordings, training
question forms only, and the answer is the named entity's fact."""

from index.reading import _FILLER as EVALUATION_FILLERS
from index.reading import THIS_REFERENCE, evaluation_set, world
from index.reading_long import FILLERS, LEAD_INS, documents
from index.reading_world import HELDOUT_QUESTION_FORMS, KIND_BY_NAME, TRAIN_QUESTION_FORMS
from index.sources import NAMED_SOURCES
from tests.index.wording import trigrams


def test_no_word_trigram_of_the_evaluations_long_prompts_outside_the_question():
    long_items = [i for i in evaluation_set("dev").items if i.kind == "long"]
    lead = long_items[0].prompt.split(".")[0]  # "I am writing a short report about X"
    assert lead.startswith("I am writing a short report about")
    evaluation = trigrams("I am writing a short report about {e}.")
    evaluation |= set().union(*(trigrams(f) for f in EVALUATION_FILLERS))
    for template in LEAD_INS + FILLERS:
        assert not trigrams(template) & evaluation, template


def test_questions_in_training_forms_about_this_entity_with_its_own_answer():
    docs = {d.doc_id: d for d in documents()}
    assert len(docs) == len(world()["train"]) and "reading-qa-long:train" in NAMED_SOURCES
    for entity in world()["train"][:80]:
        doc = docs[f"reading-qa/long/{entity.key.removeprefix('reading/')}"]
        assert doc.doc_id.startswith("reading-qa/") and doc.title == entity.name
        blocks = doc.text.split("\n")
        assert len(blocks) == 2
        for text in blocks:
            assert text.index(entity.name) < 60 and len(text) > 150  # named first, asked much later
            asked = 0
            for rel in KIND_BY_NAME[entity.kind].relations:
                forms = {f: rel.questions[f].format(e=THIS_REFERENCE[entity.kind]) for f in range(6)}
                forms = {f: q[:1].upper() + q[1:] for f, q in forms.items()}
                for f, q in forms.items():
                    if f"{q} " in text:
                        assert f in TRAIN_QUESTION_FORMS and f not in HELDOUT_QUESTION_FORMS
                        assert text.endswith(f"{q} {entity.facts[rel.name]}.")
                        asked += 1
            assert asked == 1, text


def test_the_material_is_a_pure_function_of_its_seed():
    assert [d.text for d in documents()] == [d.text for d in documents()]
