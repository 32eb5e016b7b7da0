"""The command wing's shared terminal: the Rich consoles, `fail` and the columns of every progress bar.

Messages, bars and errors go to stderr (`console`); results a script may read (a built version, a
JSON answer) go to stdout (`output`). Bad input ends a command through `fail`: one line, exit code 2.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
output = Console()

# The stages `index.build.build_index` reports that get a bar (the others are too short to show).
INDEX_STAGE_LABELS = {
    "tokenize": "tokenizing documents",
    "embed": "embedding chunks",
    "index": "building faiss index",
}


def fail(message: str) -> NoReturn:
    """Prints a one-line error and exits with code 2 (the CLI's bad-input convention)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def progress_columns() -> tuple:
    """Description, bar, done/total, elapsed and ETA: the columns of every stage bar (the demo too)."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


def progress_bar() -> Progress:
    """A Rich progress display on the shared console, with the shared columns."""
    return Progress(*progress_columns(), console=console)


def stage_progress(bars: Progress, labels: dict[str, str]):
    """The `progress(stage, done, total)` callback of `index.build.build_index`: one bar per
    labelled stage, added when the stage first reports (unlabelled stages are not shown)."""
    tasks: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in labels:
            return
        if stage not in tasks:
            tasks[stage] = bars.add_task(labels[stage], total=total)
        bars.update(tasks[stage], completed=done, total=total)

    return progress
