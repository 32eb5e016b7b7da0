"""`retro eval`: evaluate checkpoints (and optionally a Hugging Face model) into a report folder.

This module owns argument handling and printing only: the protocol (which documents, which fact
sets, which settings) is `retro.evaluation`, the metrics `retro.evaluate`, the files `retro.report`.
Bad input exits with code 2 and one line (`service.cli.console.fail`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from retro.evaluation import DEFAULT_MAX_DOCS, DEFAULT_MAX_GENERAL_DOCS, SPLITS, run_evaluation
from service.cli.console import console, fail


def eval_command(
    runs: list[Path] = typer.Argument(
        ...,
        help="run folders (retro checkpoints): RETRO models, baselines and retrieval-in-prompt "
        "comparators (e.g. a demo-rag run)",
    ),
    index: Path = typer.Option(..., "--index", help="the index folder (its CURRENT version is used)"),
    out: Path = typer.Option(..., "--out", help="report folder: report.md, report.json, plots"),
    compare_model: Path | None = typer.Option(
        None, "--compare-model", help="a Hugging Face causal LM folder (save_pretrained) to compare"
    ),
    max_facts: int | None = typer.Option(None, "--max-facts", help="ask at most N facts per fact set"),
    max_docs: int = typer.Option(DEFAULT_MAX_DOCS, "--max-docs", help="score at most N documents for bpb"),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
    in_place: bool = typer.Option(
        False, "--in-place", help="add the evaluation documents to INDEX itself, not to a scratch copy"
    ),
    split: str = typer.Option(
        "dev", "--split", help="dev (choose recipes on it) or test (frozen: the figures you report)"
    ),
    reading: bool = typer.Option(True, "--reading/--no-reading", help="run the reading set"),
    retrieval: str = typer.Option(
        "dense",
        "--retrieval",
        help="dense (MiniLM), hybrid (MiniLM + BM25), hybrid-titled (BM25 over title + chunk), "
        "hybrid-titled-doc (its first two neighbours two windows of the best document) or "
        "lexical-titled (BM25 over title + chunk alone)",
    ),
    query_tokens: int | None = typer.Option(
        None, "--query-tokens", help="retrieve each chunk with its last N tokens (default: the chunk)"
    ),
    max_general_docs: int = typer.Option(
        DEFAULT_MAX_GENERAL_DOCS,
        "--max-general-docs",
        help="bpb by neighbour overlap on at most N held-out general-text documents (0: skip it)",
    ),
    general_source: str | None = typer.Option(
        None,
        "--general-source",
        help="held-out general text: a named source or a path (default: wiki-vital:SPLIT, the "
        "held-out entities' own Wikipedia leads, in neither training nor the demo's index)",
    ),
) -> None:
    """Evaluates models: bits per byte with/without retrieval, fact accuracy, speed; writes a report."""
    import torch

    from index.retriever import RETRIEVAL_MODES
    from retro.checkpoint import CheckpointError
    from retro.report import write_report

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    for run in runs:
        if not run.is_dir():
            fail(f"run folder {run} does not exist")
    if not index.is_dir():
        fail(f"index folder {index} does not exist")
    if max_facts is not None and max_facts < 1:
        fail(f"--max-facts must be >= 1; got {max_facts}")
    if split not in SPLITS:
        fail(f"--split must be one of {', '.join(SPLITS)}; got {split!r}")
    if max_general_docs < 0:
        fail(f"--max-general-docs must be >= 0; got {max_general_docs}")
    if retrieval not in RETRIEVAL_MODES:
        fail(f"--retrieval must be one of {', '.join(RETRIEVAL_MODES)}; got {retrieval!r}")
    try:
        results = run_evaluation(
            runs,
            index,
            compare_model,
            max_facts,
            max_docs,
            device,
            log=lambda s: console.print(s, highlight=False),
            in_place=in_place,
            split=split,
            reading_items=None if reading else [],
            retrieval=retrieval,
            query_tokens=query_tokens,
            max_general_docs=max_general_docs,
            general_source=general_source,
            command=" ".join(["retro", *sys.argv[1:]]) if Path(sys.argv[0]).name == "retro" else None,
        )
    except (CheckpointError, ValueError) as e:
        fail(str(e))
    paths = write_report(results, out)
    console.print(f"report written: {', '.join(str(p) for p in paths)}", highlight=False)
