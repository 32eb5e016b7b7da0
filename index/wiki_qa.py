"""Questions over real passages for training: the training leads of Wikipedia's vital articles asked
about in their own facts, so the reader learns to answer from prose no generator wrote.

Every reading document before this one asks about a templated passage (invented entities in four
style families, or the fact sheets of countries and elements); on twenty hand-written passages the
shipped reader answered 30% of questions first where it answers 72.5% of the reading set's
(`benchmarks/fresh_passages.py`, 2026-12-07). This module reads each `wiki-vital:train` lead,
finds sentences whose subject is the lead's own subject (its title, "The <title>", the last word of
a name, or He / She / It / They / "The <noun>" after the first sentence) and whose predicate is one of a few
shapes a rule can read without a parser, and asks about them:

- `when` / `where` / `by`: "<S> was <participle> in <year>" / "in <Place>" / "by <Name>" ("When was
  S founded?", "Where was S born?", "Who designed S?"), the participles in `PARTICIPLES`;
- `died`: "<S> died / began / ended in <year or Place>" ("When did S die?");
- `capital_of`, `located`: "<S> is the capital of <Place>", "<S> is located in <Place>";
- `nationality`: "<S> was an <American> <noun>" ("What nationality was S?"), for a lead that
  calls its subject He or She;
- `alias`: "<S>, also known as <Name>, ..." ("What else is S called?");
- `population`: "<S> has a population of <number>";
- `possessed`: "Its / His / Her <noun> is <Name or number>" ("What is S's capital?");
- `definition`: the first sentence's "<S> is a <noun phrase>" up to its first clause break
  ("What is S?" -> "a head covering").

Each question comes in several wordings (`WORDINGS`: wh-questions, a terse record question, an
imperative, a completion); the answer follows, then a full stop. Per lead, `DOCS_PER_LEAD`
documents ask every question the lead gave, shuffled, each in a wording drawn anew.

**What stays held out**: only `wiki-vital:train` leads are read (the held-out countries' and
elements' own leads are not in it, `index.leakage`); every rendered question is checked against the
reading set's held-out question forms and reworded prompts (`check_question`: no word trigram of
theirs that the training forms lack, as `index.reading_paraphrase` checks its templates) and
dropped if it shares one. The hand-written passages of `benchmarks/data/` are not Wikipedia's and
their questions were written before this module.

Named source `wiki-qa:train`; doc ids `wiki-qa/<title>/q<i>`, so that `Recipe.read_prefix`
(with `wiki-qa/`) reads them from the lead's own chunks. Training material only: no serving index
holds it. It never imports `retro`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from index.corpus import Document, NamedSource, SkippedInput
from index.leakage import without_heldout_leads
from index.reading_paraphrase import word_trigrams
from index.reading_world import KINDS, TRAIN_QUESTION_FORMS
from index.wiki_vital import read_wiki_vital, wiki_vital_path

SEED = "wiki-qa-2026-12-07"
DOCS_PER_LEAD = 2

# participle -> its active past for "Who <active> S?" ("" where a "by" phrase is not an agent's)
PARTICIPLES: dict[str, str] = {
    "founded": "founded", "established": "established", "built": "built", "completed": "completed",
    "opened": "opened", "discovered": "discovered", "invented": "invented", "published": "published",
    "released": "released", "written": "wrote", "composed": "composed", "painted": "painted",
    "designed": "designed", "developed": "developed", "created": "created", "formed": "formed",
    "introduced": "introduced", "directed": "directed", "produced": "produced", "signed": "signed",
    "named": "named", "described": "described", "constructed": "constructed",
    "born": "", "first described": "first described", "first published": "first published",
    "first performed": "first performed", "performed": "performed", "launched": "launched",
    "adopted": "adopted", "proposed": "proposed", "defined": "defined", "coined": "coined",
}  # fmt: skip
# past verbs with do-support questions: "S died in 1955" -> "When did S die?"
DO_VERBS = {"died": "die", "began": "begin", "ended": "end", "started": "start", "lived": "live"}

WORDINGS: dict[str, tuple[str, ...]] = {
    "when": (
        "When was {s} {p}?", "In which year was {s} {p}?", "In what year was {s} {p}?",
        "{S}: year {p}?", "Give the year {s} was {p}.", "{S} was {p} {r}", "The year {s} was {p} was",
    ),
    "where": (
        "Where was {s} {p}?", "In which place was {s} {p}?", "{S}: {p} where?",
        "Name the place where {s} was {p}.", "{S} was {p} {r}",
    ),
    "by": (
        "Who {a} {s}?", "By whom was {s} {p}?", "Who was {s} {p} by?", "{S}: {p} by?",
        "Name the person who {a} {s}.", "{S} was {p} by",
    ),
    "died_when": ("When did {s} {v}?", "In which year did {s} {v}?", "{S}: year {d}?", "{S} {d} {r}"),
    "died_where": ("Where did {s} {v}?", "In which place did {s} {v}?", "{S}: {d} where?", "{S} {d} {r}"),
    "capital_of": (
        "What is {s} the capital of?", "Of which country is {s} the capital?", "{S}: capital of?",
        "{S} is the capital of",
    ),
    "located": (
        "Where is {s} located?", "Where is {s}?", "In which place is {s} found?", "{S}: location?",
        "{S} is located in", "Name the place where {s} is.",
    ),
    "nationality": (
        "What nationality was {s}?", "Which country was {s} from?", "{S}: nationality?",
        "Where did {s} come from?", "State the nationality of {s}.",
    ),
    "alias": (
        "What else is {s} called?", "What is another name for {s}?", "{S}: other name?",
        "{S} is also known as", "Give another name for {s}.",
    ),
    "population": (
        "What is the population of {s}?", "How many people live in {s}?", "{S}: population?",
        "The population of {s} is", "State the number of people in {s}.",
    ),
    "possessed": (
        "What {v} {s}'s {p}?", "What {v} the {p} of {s}?", "{S}: {p}?", "Name the {p} of {s}.",
        "The {p} of {s} {v}",
    ),
    "definition": ("What is {s}?", "Describe {s} briefly.", "{S}: what is it?", "Tell me what {s} is."),
}  # fmt: skip
PERSON_WORDINGS = {"definition": ("Who was {s}?", "{S}: who was that?", "Tell me who {s} was.")}

NAME = r"[A-Z][\w'’.-]*(?: (?:de |van |von |of |the |and |da |la )?[A-Z][\w'’.-]*)*"
PLACE = NAME + r"(?:, " + NAME + r")?"
YEAR = r"(?:c\. )?\d{3,4}(?: (?:BC|BCE|AD|CE))?"
DATE = r"(?:\d{1,2} [A-Z][a-z]+ \d{3,4}|[A-Z][a-z]+ \d{1,2}, \d{3,4})"
NUMBER = r"\d[\d,.]*(?: (?:million|billion|thousand))?"
PRONOUNS = {"He": "person", "She": "person", "It": "thing", "They": "thing"}
DEMONYM_END = re.compile(r"(?:an|ian|ese|ish|ch|sh|ic|i|ean)$")
# where a definition's noun phrase ends: a clause or list break
CLAUSE_BREAK = re.compile(r",|;|:| which | that | who | whose | where | when | and is | but ")
MONTHS = {"January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"}  # fmt: skip
DEFINITION_SHARE = 0.5  # of the leads whose only fact is their definition (most of them): see `lead_facts`
ADVERBS = r"(?:(?:first|originally|officially|later|formally|largely|mainly) )?"


@dataclass(frozen=True)
class Fact:
    """One question a lead answers: its kind (a `WORDINGS` key), the verb words the wording needs
    (`p` participle, `a` active past, `v` base, `d` past, `r` the preposition before the answer),
    and the answer as the lead writes it."""

    kind: str
    answer: str
    r: str = "in"
    p: str = ""
    a: str = ""
    v: str = ""
    d: str = ""


def split_sentences(text: str) -> list[str]:
    """The lead's sentences, parentheticals removed (dates of birth, pronunciations, translations)."""
    text = re.sub(r"\s*\([^()]*\)", "", text)
    text = re.sub(r"\s+", " ", text).strip()
    return [s for s in re.split(r"(?<=[a-z0-9\]”\"')][.!?]) (?=[A-Z])", text) if s]


def subject_forms(title: str) -> list[str]:
    """The ways a lead names its subject at a sentence's start, longest first."""
    base = re.sub(r"\s*\(.*\)$", "", title).strip()
    forms = [base, f"The {base[0].lower()}{base[1:]}", f"The {base}", f"A {base[0].lower()}{base[1:]}"]
    words = base.split()
    if len(words) >= 2 and all(w[:1].isupper() for w in words):
        forms.append(words[-1])
    return sorted(set(forms), key=len, reverse=True)


def _clean_answer(answer: str) -> str:
    return answer.strip().rstrip(".,;:").strip()


def read_predicate(rest: str, first: bool) -> list[Fact]:
    """The facts one predicate states about the subject ("was founded in 1887 by ...")."""
    facts: list[Fact] = []
    participle = "|".join(sorted((re.escape(p) for p in PARTICIPLES), key=len, reverse=True))
    m = re.match(rf"(?:is|was|were|are) {ADVERBS}({participle}) ", rest)
    if m:
        p = m.group(1)
        tail = rest[m.end() :]
        for prep in re.finditer(rf"(?:^|(?<=[^,;]) )(in|on|by|at) ({DATE}|{YEAR}|{PLACE})", tail[:80]):
            how, answer = prep.group(1), _clean_answer(prep.group(2))
            if re.fullmatch(f"{DATE}|{YEAR}", answer):
                if how in ("in", "on"):
                    facts.append(Fact("when", answer, r=how, p=p))
            elif how == "by" and PARTICIPLES[p]:
                facts.append(Fact("by", answer, p=p, a=PARTICIPLES[p]))
            elif how in ("in", "at") and p != "named" and answer.split()[0] not in MONTHS:
                facts.append(Fact("where", answer, r=how, p=p))
    m = re.match(rf"({'|'.join(DO_VERBS)}) (on|in) ({DATE}|{YEAR}|{PLACE})\b", rest)
    if m:
        answer = _clean_answer(m.group(3))
        kind = "died_when" if re.fullmatch(f"{DATE}|{YEAR}", answer) else "died_where"
        facts.append(Fact(kind, answer, r=m.group(2), v=DO_VERBS[m.group(1)], d=m.group(1)))
    m = re.match(rf"is the capital(?: city)?(?: and (?:the )?largest city)? of (?:the )?({PLACE})", rest)
    if m:
        facts.append(Fact("capital_of", _clean_answer(m.group(1))))
    m = re.match(rf"(?:is|was) (?:located|situated) (?:in|on) (?:the )?({PLACE})", rest)
    if m:
        facts.append(Fact("located", _clean_answer(m.group(1))))
    m = re.match(r"(?:is|was) (?:a|an) ([A-Z][a-z]+) [a-z]", rest)
    if m and DEMONYM_END.search(m.group(1)):
        facts.append(Fact("nationality", m.group(1)))
    m = re.match(rf", also (?:known|called|referred to) as (?:the )?({NAME})", rest)
    if m:
        facts.append(Fact("alias", _clean_answer(m.group(1))))
    m = re.match(
        rf"(?:has|had) a population of (?:about |approximately |around |over |more than |nearly )?({NUMBER})",
        rest,
    )
    if m:
        facts.append(Fact("population", _clean_answer(m.group(1))))
    m = re.match(r"(?:is|was|are|were) ((?:a|an) [a-z].*)", rest)
    if first and m:
        phrase = CLAUSE_BREAK.split(m.group(1).rstrip("."), maxsplit=1)[0].strip()
        phrase = re.sub(r"(?: (?:in|of|for|by|with|to|at|on|from|as))+$", "", phrase)
        if 2 <= len(phrase.split()) <= 9:
            facts.append(Fact("definition", phrase))
    return facts


def read_possessive(sentence: str) -> list[Fact]:
    """ "Its capital is Kabul." / "Her first novel was Emma." -> the subject's <noun> (`possessed`)."""
    m = re.match(
        rf"(?:Its|His|Her|Their) ([a-z]+(?: [a-z]+){{0,2}}) (is|was|are|were) ({DATE}|{NUMBER}|{PLACE})",
        sentence,
    )
    if not m or m.group(1).split()[-1] in ("name", "names"):
        return []
    return [Fact("possessed", _clean_answer(m.group(3)), p=m.group(1), v=m.group(2))]


def lead_facts(title: str, text: str) -> tuple[str, bool, list[Fact]]:
    """The subject as the lead names it, whether it is a person (He / She), and its facts."""
    sentences = split_sentences(text)
    if not sentences:
        return title, False, []
    forms = subject_forms(title)
    subject = next(
        (f for f in forms if sentences[0].startswith(f + " ") or sentences[0].startswith(f + ",")), ""
    )
    if not subject:
        return title, False, []
    person = False
    facts: list[Fact] = []
    for i, sentence in enumerate(sentences):
        opener = next((f for f in forms if sentence.startswith(f + " ") or sentence.startswith(f + ",")), "")
        if not opener and i > 0:
            opener = next((p for p in PRONOUNS if sentence.startswith(p + " ")), "")
            person = person or PRONOUNS.get(opener) == "person"
            # "The city was founded in 1639": a one-word noun after the first sentence names it too
            noun = re.match(r"The [a-z]+(?= (?:is|was|are|were) )", sentence)
            opener = opener or (noun.group(0) if noun else "")
            if not opener:
                facts += read_possessive(sentence)
        if not opener:
            continue
        rest = sentence[len(opener) :].lstrip(" ")
        if rest.startswith(","):
            rest = ", " + rest[1:].lstrip()
        facts += read_predicate(rest, first=i == 0)
    if not person:  # "the Teutonic Order is a Catholic religious order": no one's nationality
        facts = [f for f in facts if f.kind != "nationality"]
    answers_seen: set[tuple[str, str]] = set()
    unique = []
    for fact in facts:
        if (fact.kind, fact.answer) not in answers_seen and fact.answer.lower() not in subject.lower():
            answers_seen.add((fact.kind, fact.answer))
            unique.append(fact)
    # Most leads a rule reads give only their definition ("What is X?" -> what follows "X is", the
    # copy after an exact match the reader already does); half of those are left out, so that the
    # facts read from later sentences are not outnumbered further.
    if (
        all(f.kind == "definition" for f in unique)
        and random.Random(f"{SEED}:{title}").random() >= DEFINITION_SHARE
    ):
        unique = []
    return subject, person, unique


@cache
def _forbidden_trigrams() -> frozenset[tuple[str, ...]]:
    """Word trigrams of the reading set's held-out wordings that its training forms lack."""
    held, trained = set(), set()
    for kind in KINDS:
        for rel in kind.relations:
            held |= set().union(*(word_trigrams(h) for h in rel.held_out_wordings))
            trained |= set().union(*(word_trigrams(rel.questions[f]) for f in TRAIN_QUESTION_FORMS))
    return frozenset(held - trained)


def check_question(question: str, subject: str) -> bool:
    """True if `question` (the subject as {e}) shares no held-out trigram of the reading set."""
    return not (word_trigrams(question.replace(subject, "{e}")) & _forbidden_trigrams())


def render(fact: Fact, subject: str, person: bool, rng: random.Random) -> str | None:
    """One question about `fact` in a wording drawn from `WORDINGS`, with its answer; None if every
    drawn wording is refused by `check_question`."""
    inner = subject[0].lower() + subject[1:] if subject.startswith(("The ", "A ")) else subject
    wordings = list(PERSON_WORDINGS.get(fact.kind, ())) if person else []
    wordings = wordings or list(WORDINGS[fact.kind])
    rng.shuffle(wordings)
    for wording in wordings:
        question = wording.format(s=inner, S=subject, p=fact.p, a=fact.a, v=fact.v, d=fact.d, r=fact.r)
        question = question[0].upper() + question[1:]
        if check_question(question, subject):
            return f"{question} {fact.answer}."
    return None


def lead_documents(doc: Document, docs_per_lead: int = DOCS_PER_LEAD) -> list[Document]:
    """`docs_per_lead` question-and-answer documents about one lead; none if no rule reads it."""
    subject, person, facts = lead_facts(doc.title or doc.doc_id, doc.text)
    if not facts:
        return []
    rng = random.Random(f"{SEED}:{doc.doc_id}")
    title = doc.title or subject
    out = []
    for i in range(docs_per_lead):
        rng.shuffle(facts)
        items = [q for q in (render(f, subject, person, rng) for f in facts) if q]
        if items:
            out.append(Document(f"wiki-qa/{title}/q{i}", " ".join(items), source="wiki-qa", title=title))
    return out


def documents(skipped: list[SkippedInput]) -> Iterator[Document]:
    """The question-and-answer documents of every `wiki-vital:train` lead a rule reads."""
    for doc in without_heldout_leads(read_wiki_vital(skipped)):
        yield from lead_documents(doc)


SOURCES = {
    # training material, not knowledge: a serving index leaves it out, like reading-qa:train
    "wiki-qa:train": NamedSource(read=documents, check=wiki_vital_path),
}
