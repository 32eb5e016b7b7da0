"""Completion prompts for the span reader's training (`index.reading_completions`): every relation
has some, each stops where its value goes, and none says a held-out question form or reworded prompt."""

import random

import pytest

from index.reading_completions import COMPLETIONS, complete_paraphrase, completions
from index.reading_paraphrase import check_template
from index.reading_world import KINDS


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_every_relation_has_checked_completions_that_say_no_held_out_wording(kind):
    for rel in kind.relations:
        prompts = completions(kind.name, rel.name)  # raises if one fails check_template
        assert len(prompts) >= 2
        for template in prompts:
            assert template.count("{e}") == 1
            assert not template.rstrip().endswith((".", "?")), "a completion stops where the value goes"
            for held in rel.held_out_wordings:
                assert held.lower().rstrip(".?") not in template.lower()


def test_a_held_out_reworded_prompt_would_be_refused():
    for kind in KINDS:
        for rel in kind.relations:
            for reworded in rel.reworded:
                with pytest.raises(ValueError):
                    check_template(reworded, rel)
    assert set(COMPLETIONS) == {(k.name, r.name) for k in KINDS for r in k.relations}


def test_complete_paraphrase_fills_the_name():
    prompt = complete_paraphrase("town", "population", "Ostrander", random.Random(0))
    assert "Ostrander" in prompt and "{e}" not in prompt
