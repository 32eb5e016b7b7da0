"""The made-up world of the reading set: entities, their relations, and how each relation is said.

This module owns the vocabulary of `index.reading`: four kinds of invented entity (people, towns,
companies, species) with four relations each, the values drawn for them (invented names, years,
numbers, and short phrases from fixed lists), and for every relation the ways it is said: a
sentence for prose, a label for tables and records, a short phrase for lists and dialogue, six
question forms (the first three may be trained on, the last three never are) and reworded
completion prompts whose wording is not in any passage. Everything is a pure function of a seed:
the same seed gives the same world on every machine. It renders no passage (that is
`index.reading`) and never imports `retro`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

TRAIN_QUESTION_FORMS = (0, 1, 2)  # question forms a model may be trained on
HELDOUT_QUESTION_FORMS = (3, 4, 5)  # never in any training document

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "pr", "r", "s",
           "st", "t", "tr", "v", "z", "th", "sk", "qu", "w")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "ei", "y")
_CODAS = ("", "", "n", "r", "l", "s", "st", "nd", "rk", "m", "x", "th")


@dataclass(frozen=True)
class Relation:
    """One relation of one entity kind and every way the reading set says or asks it.

    Templates use {e} for the entity's name and {v} for the value. `questions[i]` for i in
    `TRAIN_QUESTION_FORMS` may appear in training; the others never do. `reworded` prompts end where
    the value must follow and share no wording with `sentence` beyond the entity's name.
    """

    name: str
    sentence: str  # "{e} was founded in {v}." (prose: encyclopedia, news, letter)
    label: str  # "Founded" (tables, records)
    phrase: str  # "founded in {v}" (lists, dialogue, chronicles)
    questions: tuple[str, str, str, str, str, str]
    reworded: tuple[str, ...]
    values: str  # the value pool: "year", "person", "town", "size", "count", or a key of PHRASES

    @property
    def held_out_wordings(self) -> list[str]:
        """The held-out question forms and reworded prompts: no training document says them."""
        return [self.questions[f] for f in HELDOUT_QUESTION_FORMS] + list(self.reworded)


@dataclass(frozen=True)
class Kind:
    name: str  # "company"
    noun: str  # "a trading company" (the encyclopedia's first sentence)
    relations: tuple[Relation, ...]
    suffixes: tuple[str, ...] = field(default=("",))  # "Works", "Brothers": part of the name


PHRASES: dict[str, tuple[str, ...]] = {
    "trade": ("cartographer", "glassblower", "beekeeper", "clockmaker", "bookbinder", "shipwright",
              "botanist", "violinist", "stonemason", "astronomer", "weaver", "chemist", "potter",
              "lighthouse keeper", "printer", "surveyor", "locksmith", "organist", "tanner", "cooper"),
    "product": ("glass beads", "copper kettles", "wool blankets", "salt cheese", "paper lanterns",
                "river barges", "brass compasses", "cherry brandy", "felt hats", "clay pipes",
                "tin whistles", "oak barrels", "silk ribbons", "iron stoves", "slate tiles",
                "linen sails", "honey cakes", "pocket watches", "leather saddles", "wax candles"),
    "food": ("pine pollen", "river snails", "fallen figs", "moss spores", "dead leaves", "wild garlic",
             "birch sap", "mayfly larvae", "acorn flour", "clover seeds", "rotting bark", "lichen",
             "small crabs", "nettle leaves", "beech nuts", "fungus threads", "duckweed", "aphids",
             "rose hips", "earthworms"),
    "habitat": ("salt marshes", "limestone caves", "alpine meadows", "peat bogs", "mangrove swamps",
                "sand dunes", "cedar forests", "volcanic slopes", "chalk cliffs", "river deltas",
                "coral reefs", "birch woods", "tea plantations", "desert oases", "kelp forests",
                "reed beds", "tundra ponds", "olive groves", "bamboo thickets", "granite scree"),
}  # fmt: skip


def _r(name, sentence, label, phrase, questions, reworded, values) -> Relation:
    return Relation(name, sentence, label, phrase, tuple(questions), tuple(reworded), values)


KINDS: tuple[Kind, ...] = (
    Kind("person", "a figure remembered in {town}", (
        _r("born", "{e} was born in {v}.", "Born", "born in {v}",
           ("In which year was {e} born?", "When was {e} born?", "What year was {e} born in?",
            "{e} was born in what year?", "Tell me the year of {e}'s birth.",
            "What is the birth year of {e}?"),
           ("The year of {e}'s birth was", "{e} came into the world in"), "year"),
        _r("hometown", "{e} grew up in {v}.", "Home town", "grew up in {v}",
           ("Where did {e} grow up?", "In which town did {e} grow up?", "What is the home town of {e}?",
            "{e} grew up in which town?", "Name the town where {e} spent their childhood.",
            "Which place was {e}'s childhood home?"),
           ("The childhood home of {e} was the town of", "As a child, {e} lived in"), "town"),
        _r("trade", "{e} worked as a {v}.", "Occupation", "worked as a {v}",
           ("What did {e} work as?", "What was the job of {e}?", "What was {e}'s occupation?",
            "{e} earned a living as what?", "Which trade did {e} practise?",
            "By profession, what was {e}?"),
           ("By profession, {e} was a", "{e} made a living as a"), "trade"),
        _r("mentor", "{e} was taught by {v}.", "Teacher", "taught by {v}",
           ("Who taught {e}?", "Who was the teacher of {e}?", "By whom was {e} taught?",
            "{e} learned from whom?", "Name the mentor of {e}.", "Whose pupil was {e}?"),
           ("The mentor of {e} was", "{e} learned the craft from"), "person"),
    )),
    Kind("town", "a market town on the {river}", (
        _r("founded", "{e} was founded in {v}.", "Founded", "founded in {v}",
           ("In which year was {e} founded?", "When was {e} founded?", "What year was {e} founded in?",
            "{e} was founded in what year?", "Tell me the year {e} was established.",
            "How far back does {e} date, in years?"),
           ("The town of {e} dates from the year", "{e} came into being in"), "year"),
        _r("mayor", "The mayor of {e} is {v}.", "Mayor", "led by mayor {v}",
           ("Who is the mayor of {e}?", "Who leads {e} as mayor?", "Who is {e}'s mayor?",
            "{e} has which mayor?", "Name the mayor of {e}.", "Who holds the office of mayor in {e}?"),
           ("The town of {e} is governed by mayor", "Heading the council of {e} is"), "person"),
        _r("known_for", "{e} is known for its {v}.", "Known for", "known for its {v}",
           ("What is {e} known for?", "What is {e} famous for?", "For what is {e} known?",
            "{e} is renowned for what?", "Name the thing {e} is famous for.",
            "Which local speciality made {e} famous?"),
           ("Visitors come to {e} above all for its", "The speciality of {e} is its"), "product"),
        _r("population", "{e} has {v} inhabitants.", "Population", "home to {v} people",
           ("How many people live in {e}?", "What is the population of {e}?",
            "How many inhabitants does {e} have?",
            "{e} has how many residents?", "Give the number of people living in {e}.",
            "What headcount of residents does {e} report?"),
           ("The number of residents of {e} is", "Counted at the last census, {e} had"), "count"),
    )),
    Kind("company", "a trading company based in {town}", (
        _r("founded", "{e} was founded in {v}.", "Founded", "founded in {v}",
           ("In which year was {e} founded?", "When was {e} founded?", "What year was {e} founded in?",
            "{e} was founded in what year?", "Tell me the year {e} was established.",
            "Since which year has {e} existed?"),
           ("The company {e} dates from the year", "{e} opened for business in"), "year"),
        _r("founder", "{e} was founded by {v}.", "Founder", "founded by {v}",
           ("Who founded {e}?", "Who was the founder of {e}?", "By whom was {e} founded?",
            "{e} was started by whom?", "Name the person who set up {e}.", "Whose company was {e} at first?"),
           ("The person who started {e} was", "{e} owes its existence to"), "person"),
        _r("product", "{e} makes {v}.", "Products", "makers of {v}",
           ("What does {e} make?", "What does {e} produce?", "What are {e}'s products?",
            "{e} manufactures what?", "Name the goods {e} sells.",
            "Which goods come out of {e}'s workshops?"),
           ("The workshops of {e} turn out", "Customers buy from {e} mainly"), "product"),
        _r("headquarters", "{e} has its headquarters in {v}.", "Headquarters", "based in {v}",
           ("Where is {e} based?", "Where are the headquarters of {e}?", "In which town is {e} based?",
            "{e} has its head office where?", "Name the town where {e} is run from.",
            "From which town is {e} managed?"),
           ("The head office of {e} stands in", "{e} is run from the town of"), "town"),
    )),
    Kind("species", "a beetle described by {person}", (
        _r("food", "{e} feeds on {v}.", "Diet", "feeds on {v}",
           ("What does {e} eat?", "What does {e} feed on?", "What is the diet of {e}?",
            "{e} lives on what food?", "Name the food of {e}.", "What makes up the meals of {e}?"),
           ("The diet of {e} consists of", "To survive, {e} eats"), "food"),
        _r("habitat", "{e} lives in {v}.", "Habitat", "found in {v}",
           ("Where does {e} live?", "What is the habitat of {e}?", "In what habitat is {e} found?",
            "{e} is found where?", "Name the habitat of {e}.", "Where would you look to find {e}?"),
           ("The natural home of {e} is", "Naturalists searching for {e} go to"), "habitat"),
        _r("length", "{e} grows to {v} millimetres.", "Length (mm)", "up to {v} millimetres long",
           ("How long does {e} grow?", "What length does {e} reach?", "How many millimetres long is {e}?",
            "{e} grows to what length?", "Give the size of {e} in millimetres.",
            "What is the maximum length of {e}, in millimetres?"),
           ("Measured in millimetres, an adult {e} reaches", "The largest specimens of {e} measure"), "size"),
        _r("discovered", "{e} was first recorded in {v}.", "First recorded", "first recorded in {v}",
           ("In which year was {e} first recorded?", "When was {e} first recorded?",
            "What year was {e} first recorded in?", "{e} was first recorded in what year?",
            "Tell me the year {e} was first observed.", "Since what year has science known {e}?"),
           ("Science has known {e} since the year", "{e} was first noticed by naturalists in"), "year"),
    ), suffixes=(" beetle", " moth", " weevil")),
)  # fmt: skip
KIND_BY_NAME = {k.name: k for k in KINDS}


class NameMaker:
    """Invented words from syllables; never the same word twice from one maker."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        while True:
            n = self.rng.randint(*syllables)
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(n)]
            word = ("".join(parts) + self.rng.choice(_CODAS)).capitalize()
            if word not in self.used and 4 <= len(word) <= 11:
                self.used.add(word)
                return word

    def person(self) -> str:
        return f"{self.word((2, 2))} {self.word((2, 3))}"

    def value(self, pool: str) -> str:
        if pool == "year":
            return str(self.rng.randint(1520, 1985))
        if pool == "size":
            return str(self.rng.randint(8, 96))
        if pool == "count":
            return f"{self.rng.randint(2, 90)},{self.rng.randint(0, 999):03d}"
        if pool == "person":
            return self.person()
        if pool == "town":
            return self.word()
        return self.rng.choice(PHRASES[pool])


@dataclass(frozen=True)
class WorldEntity:
    key: str  # "reading/company/vandrel-works": stable, names its documents
    kind: str
    name: str
    facts: dict[str, str] = field(hash=False)  # relation name -> value
    setting: dict[str, str] = field(hash=False)  # {trade}, {town}, {river}, {person} of the first sentence


def make_entity(kind: Kind, names: NameMaker, rng: random.Random, split: str) -> WorldEntity:
    base = names.word()
    if kind.name == "person":
        name = f"{names.word((2, 2))} {base}"
    elif kind.name == "company":
        name = base + rng.choice((" Works", " and Sons", " Trading", " Mills", " Foundry"))
    else:
        name = base + rng.choice(kind.suffixes)
    facts = {rel.name: names.value(rel.values) for rel in kind.relations}
    setting = {
        "trade": rng.choice(PHRASES["trade"]),
        "town": names.word(),
        "river": names.word((2, 2)) + " river",
        "person": names.person(),
    }
    slug = "-".join(name.lower().split())
    return WorldEntity(f"reading/{split}/{kind.name}/{slug}", kind.name, name, facts, setting)


def make_world(sizes: dict[str, int], seed: int) -> dict[str, list[WorldEntity]]:
    """{split: entities}: `sizes[split]` invented entities per split, kinds in turn. One name maker
    serves every split, so no name (of an entity or a value) is shared between two splits' entities
    unless drawn from the fixed phrase lists."""
    rng = random.Random(seed)
    names = NameMaker(rng)
    return {
        split: [make_entity(KINDS[i % len(KINDS)], names, rng, split) for i in range(n)]
        for split, n in sizes.items()
    }
