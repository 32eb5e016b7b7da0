"""The reading evaluation's bookkeeping: reader vs retriever errors, look-alikes, updates, settings."""

from types import SimpleNamespace

import numpy as np

from index.reading import ReadingItem
from retro.reading_eval import UPDATE_REMOVED, RecordingRetrieve, markdown_table, run_items, summarise


class FakeTokenizer:
    """Token i + 1 is the i-th text of a table; 0 is padding."""

    def __init__(self, texts):
        self.texts = texts

    def decode_batch(self, rows):
        return [" ".join(self.texts[t - 1] for t in row) for row in rows]


class FakeRetriever:
    """Returns, for each text, the documents whose id holds a word of the text (minus exclusions);
    a document's tokens say what `chunk_text` gives it (default: its value)."""

    def __init__(self, doc_ids, chunk_text=None):
        self.doc_ids, self.window = doc_ids, 2
        self.chunk_text = {d: VALUES.get(d, "nothing here") for d in doc_ids} | (chunk_text or {})
        table = list(self.chunk_text.values())
        self.store = SimpleNamespace(
            n_chunks=10,
            chunks_with_continuations=lambda ids, window: np.zeros((*ids.shape, 2 * window), dtype=np.int64),
            pad_id=0,
            tokenizer=FakeTokenizer(table),
        )
        self.token = {d: table.index(t) + 1 for d, t in self.chunk_text.items()}

    def search(self, texts, k, exclude=None):
        out = []
        for i, text in enumerate(texts):
            banned = exclude[i] if exclude else set()
            hits = [d for d in self.doc_ids if d.split("/")[0] in text and d not in banned][:k]
            tokens = np.zeros((k, 4), dtype=np.int64)
            for j, d in enumerate(hits):
                tokens[j, 0] = self.token[d]
            hits += [""] * (k - len(hits))
            out.append(SimpleNamespace(tokens=tokens, doc_ids=hits))
        return out


def item(kind, name, answer, evidence, **extra):
    return ReadingItem(kind, name, "r", "dialogue", "q3", f"Tell me about {name}?", answer, evidence, **extra)


ITEMS = [
    item("question", "alpha", "A1", ("alpha/p",)),
    item("question", "beta", "B1", ("beta/p",)),  # its passage is not in the fake index
    item("lookalike", "gamma", "G1", ("gamma/p",), other_answer="G2"),
    item("update", "delta", "NEW", ("delta/new",), other_answer="OLD", other_evidence=("delta/old",)),
]


VALUES = {"alpha/p": " A1.", "gamma/p": " G2, or so", "delta/new": " NEW", "delta/old": " OLD"}


def reader(prompt, retrieve, query_start=0):
    """Reads perfectly what it is shown: the first seen document's value, nothing without retrieval."""
    if retrieve is None:
        return " I do not know"
    retrieve([prompt])
    seen = retrieve.seen or []
    return next((VALUES[d] for d in seen if d in VALUES), " no idea")


def test_reader_and_retriever_errors_are_told_apart():
    retriever = FakeRetriever(["alpha/p", "gamma/p", "delta/old", "delta/new"])

    def make(mode, exclude):
        return RecordingRetrieve(retriever, 2, mode, exclude)

    results = run_items(ITEMS, reader, make)
    summary = summarise(results)
    assert set(summary) == {"on", "off", "random", UPDATE_REMOVED}
    question = summary["on"]["question"]
    assert (question["first"]["k"], question["first"]["n"]) == (1, 2)  # beta's passage was never found
    assert (question["retrieved"]["k"], question["retrieved"]["n"]) == (1, 2)
    assert question["first_given_retrieved"]["value"] == 1.0  # given its passage, the reader is right
    assert summary["off"]["question"]["first"]["k"] == 0 and "retrieved" not in summary["off"]["question"]
    assert summary["random"]["question"]["first"]["k"] == 0
    lookalike = summary["on"]["lookalike"]
    assert lookalike["first"]["k"] == 0 and lookalike["took_other"]["k"] == 1  # it took the twin's value
    # the old passage comes first in the index: with it present the old value wins, removed the new one
    assert summary["on"]["update"]["took_other"]["k"] == 1
    removed = summary[UPDATE_REMOVED]["update"]
    assert removed["first"]["k"] == 1 and removed["took_other"]["k"] == 0
    table = markdown_table(summary, ("question", "lookalike", "update"))
    assert "| question | 50.0% (1/2" in table and "update, old passage removed" in table
    assert question["shown"]["k"] == 1 and question["first_given_shown"]["value"] == 1.0


def test_a_passage_retrieved_by_a_chunk_without_the_answer_is_retrieved_but_not_shown():
    # alpha's passage is found, but by a chunk that holds another part of it, not the value
    retriever = FakeRetriever(["alpha/p"], chunk_text={"alpha/p": "alpha is a town on a river"})

    def guesser(prompt, retrieve, query_start=0):
        retrieve([prompt])
        return " A1"  # right, but not from what it was shown

    results = run_items(
        ITEMS[:1], guesser, lambda mode, exclude: RecordingRetrieve(retriever, 2, mode, exclude), ("on",)
    )
    row = summarise(results)["on"]["question"]
    assert row["retrieved"]["k"] == 1 and row["shown"]["k"] == 0
    assert row["first_given_shown"]["n"] == 0
    assert "answer shown" in markdown_table(summarise(results), ("question",))


def test_a_prompt_holding_the_answer_earns_nothing_and_errors_count_as_wrong():
    leaky = ReadingItem("question", "e", "r", "f", "q3", "Is it Paris?", "Paris", ("e/p",))
    results = run_items([leaky], lambda prompt, retrieve, query_start: " Paris", None)
    assert [r.setting for r in results] == ["off"] and not results[0].first

    def failing(prompt, retrieve, query_start):
        raise ValueError("the prompt has 900 tokens; this model's limit is 200 prompt tokens")

    result = run_items([ITEMS[0]], failing, None)[0]
    assert not result.first and "limit" in result.error
    assert summarise([result])["off"]["question"]["errors"] == 1


def test_chat_items_ask_the_held_out_questions_as_a_chat_request_renders_them():
    from index.reading import TRAIN_SYSTEM_PROMPTS, evaluation_set
    from retro.chat_template import ChatTurn, generation_prompt
    from retro.reading_eval import CHAT_KIND, EVAL_SYSTEM_PROMPTS, chat_items

    items = evaluation_set("dev").items
    chats = chat_items(items)
    questions = [i for i in items if i.kind == "question"]
    assert len(chats) == len(questions) and {c.kind for c in chats} == {CHAT_KIND}
    assert not set(EVAL_SYSTEM_PROMPTS) & set(TRAIN_SYSTEM_PROMPTS)  # never a training conversation's
    first = chats[0]
    want = generation_prompt(
        [ChatTurn("system", EVAL_SYSTEM_PROMPTS[0]), ChatTurn("user", questions[0].prompt)]
    )
    assert first.prompt == want.text == f"{EVAL_SYSTEM_PROMPTS[0]} {questions[0].prompt}"
    assert (first.answer, first.evidence) == (questions[0].answer, questions[0].evidence)
    # retrieval reads the question, not the system message: as /v1/chat/completions searches
    assert first.query_start == want.query_start and first.prompt[first.query_start :] == questions[0].prompt


def test_a_chat_item_is_answered_with_its_query_start_and_a_plain_one_from_the_start():
    from retro.reading_eval import chat_items

    plain = ReadingItem("question", "e", "r", "f", "q3", "When was E founded?", "1920", ("e/p",))
    starts = {}

    def recording(prompt, retrieve, query_start):
        starts[prompt] = query_start
        return " 1920"

    (chat,) = chat_items([plain])
    results = run_items([plain, chat], recording, None)
    assert starts == {plain.prompt: 0, chat.prompt: len(chat.prompt) - len(plain.prompt)}
    assert [r.first for r in results] == [True, True]
