"""The scoring rule every reported accuracy uses: first span, containment, Wilson intervals."""

import math

import pytest

from retro.scoring import Proportion, answer_contained, answer_first, answer_in_prompt, wilson_interval


@pytest.mark.parametrize(
    "answer, generated",
    [
        ("1843", " 1843."),
        ("Paris", " Paris, the capital"),
        ("Paris", " the Paris area"),  # a leading article is skipped
        ("Paris", ': "Paris"'),  # so are punctuation and whitespace
        ("The Hague", " The Hague is"),  # an answer that starts with an article
        ("glass beads", " Glass  beads and more"),  # case and runs of spaces do not matter
        ("+917", " +917"),
        ("Ostrakan", "Ostrakan"),
    ],
)
def test_answer_said_first_counts(answer, generated):
    assert answer_first(answer, generated)


@pytest.mark.parametrize(
    "answer, generated",
    [
        ("H", " the"),  # the old rule's false positive: "H" inside "the"
        ("H", " Helium"),  # the next character must not be a letter
        ("19", " 1943"),  # ... nor a digit
        ("Asia", " located in Asia"),  # somewhere, but not first
        ("Paris", " a city. Paris"),
        ("Paris", ""),
        ("", " anything"),
    ],
)
def test_answer_not_said_first_does_not_count(answer, generated):
    assert not answer_first(answer, generated)


def test_containment_respects_word_boundaries():
    assert answer_contained("Asia", " located in Asia.")
    assert not answer_contained("H", " the")
    assert not answer_contained("19", " in 1943")
    assert answer_in_prompt("Paris", "The capital, Paris, is")


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)  # the normal approximation: 0-0
    low, high = wilson_interval(30, 30)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.8865, abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_proportion_prints_value_count_and_interval():
    p = Proportion(4, 30)
    assert str(p) == "13.3% (4/30; 5.3%-29.7%)"
    assert p.to_dict()["k"] == 4 and p.to_dict()["n"] == 30
