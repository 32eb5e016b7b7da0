"""Questions about passages that no generator of this project wrote, asked as a user asks them.

`benchmarks/data/fresh_passages.jsonl` holds 20 short passages written by hand on 2026-12-07 in
styles of their own (a news item, field notes, a letter, a recipe card, a specimen label, an
interview, a Q&A ...) about made-up things, each with three questions and their answers. The script
serves a model as `retro serve` does (the app in process, on a scratch copy of `--index`), adds the
passages through `POST /v1/documents`, asks every question through `POST /v1/completions`
(greedy, 12 tokens: fewer than a chunk, so every search is the prompt's; `--chat`: as a one-turn
chat through `POST /v1/chat/completions`) and scores what the model
says first (`retro.scoring.answer_first`), four ways:

- `served`: the model's own settings (for `models/demo`, the first token's copy bias, lookahead and
  span reader);
- `no span reader`: the request's `retrieval.span_weight: 0` (the RETRO decoder reads alone);
- `no lookahead`: the request's `first_candidates: 0`;
- `as trained`: `first_candidates: 0`, `retrieval.first_copy_bias: 0` and `retrieval.span_weight: 0`;
- `retrieval off`: `retrieval.enabled: false`.

"passage retrieved" says whether the question's passage was among the neighbours of the prompt's
last chunk, so reader and retriever errors are told apart. This is a check, not a development set:
nothing is to be tuned on it, or it stops measuring what a user's own documents get. A second set of
20 passages written the same way, `benchmarks/data/fresh_passages_dev.jsonl` (`--data`), is the one
to choose settings on; `--variant NAME=JSON` (repeatable) asks with other request fields.

    PYTHONPATH=. python benchmarks/fresh_passages.py --model models/demo --index INDEX [--out OUT.json]
    PYTHONPATH=. python benchmarks/fresh_passages.py --model models/demo --index INDEX \
        --data benchmarks/data/fresh_passages_dev.jsonl \
        --variant 'bias 8={"retrieval": {"first_copy_bias": 8}}'
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "fresh_passages.jsonl"
VARIANTS = {
    "served": {},
    "no span reader": {"retrieval": {"span_weight": 0}},
    "no lookahead": {"first_candidates": 0},
    "as trained": {"first_candidates": 0, "retrieval": {"first_copy_bias": 0, "span_weight": 0}},
    "retrieval off": {"retrieval": {"enabled": False}},
}


def load_passages(path: Path = DATA) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def last_chunk_doc_ids(body: dict) -> set[str]:
    """Doc ids of the neighbours retrieved for the prompt's last chunk (every search of a reply
    shorter than a chunk is the prompt's)."""
    records = body.get("retrieval") or []
    if not records:
        return set()
    last = max(r["for_chunk"] for r in records)
    return {r["doc_id"] for r in records if r["for_chunk"] == last}


def ask(client, question: str, args, extra: dict) -> tuple[str, dict]:
    """The model's greedy reply to one question (a completion, or with --chat a one-turn chat)."""
    request = {"max_tokens": args.max_tokens, "temperature": 0, **extra}
    if args.chat:
        request["messages"] = [{"role": "user", "content": question}]
        response = client.post("/v1/chat/completions", json=request)
    else:
        request["prompt"] = question
        response = client.post("/v1/completions", json=request)
    response.raise_for_status()
    body = response.json()
    choice = body["choices"][0]
    return (choice["message"]["content"] if args.chat else choice["text"]), body


def command_line(args) -> str:
    """The command that ran, as a shell line (a flag alone when set; unset options left out)."""
    words = ["python benchmarks/fresh_passages.py"]
    for name, value in vars(args).items():
        flag = f"--{name.replace('_', '-')}"
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            words += [f"{flag} {shlex.quote(item)}" for item in value]
        elif value not in (None, False):
            words.append(f"{flag} {value}")
    return " ".join(words)


def summary(rows: list[dict]) -> dict:
    from retro.scoring import wilson_interval

    n, first = len(rows), sum(r["first"] for r in rows)
    retrieved = [r for r in rows if r["retrieved"]]
    low, high = wilson_interval(first, n)
    return {
        "n": n,
        "first": first,
        "first_pct": round(100 * first / n, 1),
        "wilson_95": [round(100 * low, 1), round(100 * high, 1)],
        "contains": sum(r["contains"] for r in rows),
        "retrieved": len(retrieved),
        "first_given_retrieved": sum(r["first"] for r in retrieved),
    }


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo"))
    parser.add_argument("--index", type=Path, required=True, help="the serving index (copied, not changed)")
    parser.add_argument("--retrieval", default="lexical-titled", help="the service's retrieval mode")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="every answer and the summary, as JSON")
    parser.add_argument("--data", type=Path, default=DATA, help="passages and questions (JSONL)")
    parser.add_argument(
        "--chat", action="store_true", help="ask each question as a one-turn chat (/v1/chat/completions)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar='NAME={"first_candidates": 0}',
        help="request fields of one setting (repeatable; replaces the four default settings)",
    )
    return parser


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.variant:
        variants = {}
        for item in args.variant:
            name, sep, fields = item.partition("=")
            if not sep:
                parser.error(f"--variant takes NAME=JSON; got {item!r}")
            variants[name] = json.loads(fields)

    from fastapi.testclient import TestClient

    from index.store import copy_serving_version
    from retro.scoring import answer_contained, answer_first
    from service.app import create_app
    from service.settings import Settings

    passages = load_passages(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        index = copy_serving_version(args.index, Path(tmp) / "index")
        settings = Settings(model=args.model, index=index, retrieval=args.retrieval)
        with TestClient(create_app(settings)) as client:
            deadline = time.monotonic() + 600
            while client.get("/health").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not become ready")
                time.sleep(0.2)
            documents = [{"id": p["id"], "title": p["title"], "text": p["text"]} for p in passages]
            added = client.post("/v1/documents", json={"documents": documents})
            added.raise_for_status()
            if added.json()["added"] != len(passages):
                raise SystemExit(f"not every passage was added: {added.json()['documents']}")
            rows = {name: [] for name in variants}
            for passage in passages:
                for question in passage["questions"]:
                    for name, extra in variants.items():
                        text, body = ask(client, question["prompt"], args, extra)
                        rows[name].append({
                            "passage": passage["id"], "prompt": question["prompt"],
                            "answer": question["answer"], "generated": text,
                            "first": answer_first(question["answer"], text),
                            "contains": answer_contained(question["answer"], text),
                            "retrieved": passage["id"] in last_chunk_doc_ids(body),
                        })  # fmt: skip
    results = {
        "command": command_line(args),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "summary": {name: summary(r) for name, r in rows.items()},
        "answers": rows,
    }
    n_questions = sum(len(p["questions"]) for p in passages)
    print(f"{len(passages)} passages, {n_questions} questions, model {args.model}")
    print("| setting | first span (Wilson 95%) | contains | passage retrieved | first span given retrieved |")
    print("|---|---|---|---|---|")
    for name, s in results["summary"].items():
        low, high = s["wilson_95"]
        first = f"{s['first_pct']}% ({s['first']}/{s['n']}, {low}-{high})"
        given = f"{s['first_given_retrieved']}/{s['retrieved']}"
        print(f"| {name} | {first} | {s['contains']} | {s['retrieved']} | {given} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
