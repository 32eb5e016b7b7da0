"""The hand-written passages of `benchmarks/fresh_passages.py` ask fair questions: every answer is
in its passage's text and none in its question (which would earn no credit under first-span
scoring), ids are unique; and the benchmark reads a reply's neighbours for the prompt's last chunk."""

import importlib.util
from pathlib import Path

from retro.scoring import answer_contained, answer_in_prompt

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fresh_passages.py"
spec = importlib.util.spec_from_file_location("fresh_passages", SCRIPT)
fresh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fresh)


def test_every_answer_is_in_its_passage_and_not_in_its_question():
    check, dev = fresh.load_passages(), fresh.load_passages(fresh.DATA.with_name("fresh_passages_dev.jsonl"))
    for passages in (check, dev):
        assert len(passages) == 20 and sum(len(p["questions"]) for p in passages) == 60
    passages = check + dev
    assert len({p["id"] for p in passages}) == len(passages)
    assert not {p["title"] for p in check} & {p["title"] for p in dev}  # two sets, no passage shared
    for p in passages:
        assert p["title"] and p["text"].strip()
        for q in p["questions"]:
            assert answer_contained(q["answer"], p["text"]), (p["id"], q)
            assert not answer_in_prompt(q["answer"], q["prompt"]), (p["id"], q)


def test_the_passage_counts_as_retrieved_only_for_the_prompts_last_chunk():
    body = {"retrieval": [{"doc_id": "a", "for_chunk": 0}, {"doc_id": "b", "for_chunk": 1},
                          {"doc_id": "c", "for_chunk": 1}]}  # fmt: skip
    assert fresh.last_chunk_doc_ids(body) == {"b", "c"}
    assert fresh.last_chunk_doc_ids({"retrieval": []}) == set()
    assert fresh.last_chunk_doc_ids({}) == set()


def test_the_recorded_command_runs_what_ran():
    """A results file's `command` parses back to the same options, flags and quoted JSON included."""
    import shlex

    argv = ["--index", "/tmp/i", "--chat", "--data", "d.jsonl", "--variant", 'k3={"retrieval": {"k": 3}}',
            "--variant", "off={}"]  # fmt: skip
    args = fresh.arguments().parse_args(argv)
    line = fresh.command_line(args)
    assert line.startswith("python benchmarks/fresh_passages.py ")
    assert fresh.arguments().parse_args(shlex.split(line)[2:]) == args
    without_chat = fresh.arguments().parse_args(["--index", "/tmp/i"])
    assert "--chat" not in fresh.command_line(without_chat)
