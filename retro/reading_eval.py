"""The reading evaluation: answers to `index.reading` items, scored first-span, with diagnostics.

This module owns turning a model's greedy answers to the reading set into the figures a report
holds. For every item it records what the model said first and, for retrieval on, whether a
passage that states the answer was among the neighbours of the prompt's last chunk (the ones the
first answer token attends to), so reader errors and retriever errors are told apart:

- chat: each held-out-form question again as a chat (`chat_items`: a system message no training
  conversation uses, then the question as the user turn, rendered by `retro.chat_template` as
  `/v1/chat/completions` renders it, its system message kept out of the retrieval queries as the
  service keeps it out), kind `question_chat`, so the chat score sits beside the completion score
  of the same questions;
- settings: `on` (k neighbours searched with each chunk's text), `off` (no neighbours), `random`
  (k random chunks of the index per chunk), and for update items also `on, old removed` (the
  passage with the old value excluded from the search, as if deleted);
- per item kind (and per style family and prompt form): first-span accuracy (`retro.scoring`),
  containment as a second column, the share whose evidence was retrieved, and accuracy given that
  it was; look-alike items count answers that took the twin's value, update items new / old /
  other. Every proportion carries its Wilson 95% interval; a prompt that holds the answer scores 0.

The model is reached through one callable, `answer(prompt, retrieve, query_start) -> generated
text` (`query_start`: the prompt's first character its retrieval queries read), so this
module needs no model class (`retro.evaluation` passes a `LanguageModel`'s greedy `generate`). It
loads nothing and writes no files (`retro.report` does).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from index.reading import ReadingItem
from retro.chat_template import ChatTurn, generation_prompt
from retro.scoring import Proportion, answer_contained, answer_first, answer_in_prompt

SETTINGS = ("on", "off", "random")
UPDATE_REMOVED = "on, old removed"
CHAT_KIND = "question_chat"
# The chat items' system messages: none is a training conversation's (index.reading.TRAIN_SYSTEM_PROMPTS).
EVAL_SYSTEM_PROMPTS = (
    "Please answer the user's question.",
    "Use what you know to answer.",
    "Be concise and accurate.",
)


@dataclass(frozen=True)
class ChatItem(ReadingItem):
    """A reading item asked as a chat: `prompt` is the rendered conversation, and its retrieval
    queries read it from `query_start` on (after the system message), as the service's do."""

    query_start: int = 0


def chat_items(items: Sequence[ReadingItem]) -> list[ChatItem]:
    """The `question` items (held-out forms) as chats: [system, user question], the system message
    cycling through `EVAL_SYSTEM_PROMPTS`, rendered into the prompt a chat request sends."""
    questions = [item for item in items if item.kind == "question"]
    chats = []
    for i, item in enumerate(questions):
        system = EVAL_SYSTEM_PROMPTS[i % len(EVAL_SYSTEM_PROMPTS)]
        prompt = generation_prompt([ChatTurn("system", system), ChatTurn("user", item.prompt)])
        fields = {**asdict(item), "kind": CHAT_KIND, "prompt": prompt.text, "query_start": prompt.query_start}
        chats.append(ChatItem(**fields))
    return chats


class RecordingRetrieve:
    """A language model's `retrieve(texts) -> [n, k, 2m]` that remembers what the model was shown.

    `seen` holds the doc ids of the neighbours of the last chunk of the first call (the prompt's last
    chunk) and `shown` their text as the model gets it (chunk + continuation, decoded): a passage
    can be retrieved by a chunk that does not hold the answer, which only `shown` tells. `mode`
    "random" draws random chunks instead; `exclude` doc ids are never returned. The tokens are the
    index's (chunk + continuation); the model fits them to its own length.
    """

    def __init__(self, retriever, k: int, mode: str = "on", exclude: set[str] | None = None, seed: int = 0):
        self.retriever, self.k = retriever, k
        self.mode, self.exclude = mode, exclude or set()
        self.rng = np.random.default_rng(seed)
        self.seen: list[str] | None = None
        self.shown: list[str] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.mode == "random":
            ids = self.rng.integers(0, self.retriever.store.n_chunks, size=(len(texts), self.k))
            if self.seen is None:
                self.seen = []
            shown = self.retriever.store.chunks_with_continuations(ids, window=self.retriever.window)
            return np.asarray(shown, dtype=np.int64)
        hits = self.retriever.search(
            list(texts), self.k, [self.exclude] * len(texts) if self.exclude else None
        )
        if self.seen is None:
            self.seen = list(hits[-1].doc_ids)
            pad = self.retriever.store.pad_id
            self.shown = self.retriever.store.tokenizer.decode_batch(
                [row[row != pad].tolist() for row in np.asarray(hits[-1].tokens)]
            )
        return np.stack([np.asarray(h.tokens, dtype=np.int64) for h in hits])


@dataclass
class ItemResult:
    item: ReadingItem
    setting: str
    generated: str
    first: bool  # the answer is what the model says first (and the prompt did not hold it)
    contained: bool  # the answer occurs anywhere in the generation, on word boundaries
    retrieved: bool | None  # evidence among the neighbours of the prompt's last chunk (None: no retrieval)
    shown: bool | None = None  # the answer's words in those neighbours' tokens (chunk + continuation)
    took_other: bool = False  # lookalike: the twin's value first; update: the old value first
    error: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["item"] = asdict(self.item)
        return d


def run_items(
    items: Sequence[ReadingItem],
    answer: Callable[[str, Callable | None], str],
    make_retrieve: Callable[[str, set[str]], RecordingRetrieve] | None,
    settings: Sequence[str] = SETTINGS,
    log=lambda message: None,
) -> list[ItemResult]:
    """Every item in every setting; `make_retrieve(mode, exclude)` is None for a model that never
    retrieves (then only "off" is run)."""
    results = []
    for setting in settings if make_retrieve is not None else ("off",):
        for item in items:
            results.append(_run_one(item, setting, answer, make_retrieve))
        log(f"  reading, retrieval {setting}: {len(items)} items")
    if make_retrieve is not None:
        updates = [i for i in items if i.kind == "update"]
        for item in updates:
            results.append(_run_one(item, UPDATE_REMOVED, answer, make_retrieve))
    return results


def _run_one(item: ReadingItem, setting: str, answer, make_retrieve) -> ItemResult:
    retrieve = None
    if setting != "off":
        exclude = set(item.other_evidence) if setting == UPDATE_REMOVED else set()
        retrieve = make_retrieve("random" if setting == "random" else "on", exclude)
    try:
        text = answer(item.prompt, retrieve, item.query_start if isinstance(item, ChatItem) else 0)
    except Exception as e:  # a prompt the model cannot take counts as wrong, with the reason
        return ItemResult(item, setting, "", False, False, None, error=f"{type(e).__name__}: {e}")
    leaked = answer_in_prompt(item.answer, item.prompt)
    retrieved = shown = None
    if retrieve is not None and retrieve.mode == "on" and retrieve.seen is not None:
        retrieved = any(d in item.evidence for d in retrieve.seen)
        shown = any(answer_contained(item.answer, t) for t in retrieve.shown or ())
    took_other = bool(item.other_answer) and answer_first(item.other_answer, text)
    return ItemResult(
        item,
        setting,
        text,
        first=answer_first(item.answer, text) and not leaked,
        contained=answer_contained(item.answer, text) and not leaked,
        retrieved=retrieved,
        shown=shown,
        took_other=took_other,
    )


def summarise(results: Sequence[ItemResult]) -> dict:
    """{setting: {kind: row}} where a row holds Proportions as dicts: first, contained, retrieved,
    first_given_retrieved, shown (the answer's words in the neighbours the model saw),
    first_given_shown, took_other; plus per-family and per-form first-span accuracy."""
    groups: dict[tuple[str, str], list[ItemResult]] = defaultdict(list)
    for r in results:
        groups[(r.setting, r.item.kind)].append(r)
    summary: dict = {}
    for (setting, kind), rows in sorted(groups.items()):
        summary.setdefault(setting, {})[kind] = _row(rows)
    return summary


def _row(rows: Sequence[ItemResult]) -> dict:
    n = len(rows)
    with_retrieval = [r for r in rows if r.retrieved is not None]
    given = [r for r in with_retrieval if r.retrieved]
    by_family: dict[str, list[ItemResult]] = defaultdict(list)
    by_form: dict[str, list[ItemResult]] = defaultdict(list)
    for r in rows:
        by_family[r.item.family].append(r)
        by_form[r.item.form].append(r)
    row = {
        "first": Proportion(sum(r.first for r in rows), n).to_dict(),
        "contained": Proportion(sum(r.contained for r in rows), n).to_dict(),
        "took_other": Proportion(sum(r.took_other for r in rows), n).to_dict(),
        "errors": sum(r.error is not None for r in rows),
        "by_family": {
            f: Proportion(sum(r.first for r in g), len(g)).to_dict() for f, g in sorted(by_family.items())
        },
        "by_form": {
            f: Proportion(sum(r.first for r in g), len(g)).to_dict() for f, g in sorted(by_form.items())
        },
    }
    if with_retrieval:
        row["retrieved"] = Proportion(sum(r.retrieved for r in with_retrieval), len(with_retrieval)).to_dict()
        row["first_given_retrieved"] = Proportion(sum(r.first for r in given), len(given)).to_dict()
    with_shown = [r for r in rows if r.shown is not None]
    if with_shown:
        shown = [r for r in with_shown if r.shown]
        row["shown"] = Proportion(len(shown), len(with_shown)).to_dict()
        row["first_given_shown"] = Proportion(sum(r.first for r in shown), len(shown)).to_dict()
    return row


def _cell(p: dict | None) -> str:
    if not p or not p["n"]:
        return "-"
    return f"{p['value']:.1%} ({p['k']}/{p['n']}, {p['low']:.0%}-{p['high']:.0%})"


def markdown_table(summary: dict, kinds: Sequence[str]) -> str:
    """One row per item kind: first span with retrieval on / off / random, containment, passage
    retrieved, first span given retrieved, the answer shown (its words in the neighbours the model
    saw: a passage retrieved by a chunk without the answer is not), first span given shown, and
    (look-alikes, updates) the other value taken."""
    lines = [
        "| prompts | first span, retrieval on | off | random neighbours | contains (on) | passage retrieved "
        "| first span given retrieved | answer shown | first span given shown | other value taken (on) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    settings = [s for s in (*SETTINGS, UPDATE_REMOVED) if s in summary]
    for kind in kinds:
        on = summary.get("on", {}).get(kind)
        if on is None and kind not in summary.get("off", {}):
            continue
        off = summary.get("off", {}).get(kind)
        rnd = summary.get("random", {}).get(kind)
        other = _cell(on["took_other"]) if on and kind in ("lookalike", "update") else ""
        cells = [
            on and on["first"],
            off and off["first"],
            rnd and rnd["first"],
            on and on["contained"],
            on and on.get("retrieved"),
            on and on.get("first_given_retrieved"),
            on and on.get("shown"),
            on and on.get("first_given_shown"),
        ]
        lines.append(f"| {kind} | " + " | ".join(_cell(c) for c in cells) + f" | {other} |")
    if UPDATE_REMOVED in settings and "update" in summary[UPDATE_REMOVED]:
        row = summary[UPDATE_REMOVED]["update"]
        cells = [
            row["first"],
            None,
            None,
            row["contained"],
            row.get("retrieved"),
            row.get("first_given_retrieved"),
            row.get("shown"),
            row.get("first_given_shown"),
        ]
        lines.append(
            "| update, old passage removed | "
            + " | ".join(_cell(c) for c in cells)
            + f" | {_cell(row['took_other'])} |"
        )
    return "\n".join(lines)
