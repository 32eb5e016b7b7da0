"""`retro reader train`: the span reader (`retro.span_reader`), trained on the project's own
training questions (`index.span_examples`) into a run folder that a killed run resumes from.
`retro export RUN --span-reader FOLDER --span-weight W` then stores it beside a RETRO checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer

from service.cli.console import console, fail, progress_bar

reader_app = typer.Typer(
    no_args_is_help=True, help="The span reader: where in the neighbours an answer starts."
)


@reader_app.command("train")
def reader_train_command(
    out: Path = typer.Option(
        ..., "--out", help="the run folder (resumed if it holds a run of the same settings)"
    ),
    steps: int = typer.Option(1000, help="optimiser steps"),
    batch_size: int = typer.Option(16, "--batch-size", help="examples per step"),
    lr: float = typer.Option(1e-3, help="peak learning rate (warmup, then linear decay to zero)"),
    rank: int = typer.Option(16, help="rank of the adapters on MiniLM's linear layers"),
    seed: int = typer.Option(0, help="seed of the adapters' initial weights"),
    wiki: bool = typer.Option(True, help="include wiki-qa's questions over wiki-vital:train leads"),
    facts: bool = typer.Option(
        False, help="include the training countries' and elements' fact pairs (not in the shipped reader)"
    ),
) -> None:
    """Trains the span reader on the reading set's training entities (questions and completions),
    update notices and wiki-qa (no held-out family, question form, reworded prompt or entity)."""
    from index.span_examples import span_examples
    from retro.span_reader_train import ReaderTrainSettings, train_span_reader

    settings = ReaderTrainSettings(steps=steps, batch_size=batch_size, lr=lr, rank=rank, seed=seed)
    try:
        settings.check()
    except ValueError as e:
        fail(str(e))
    try:
        examples = span_examples(wiki=wiki, facts=facts)
    except (OSError, ValueError) as e:
        fail(f"cannot read the training examples: {e}")
    console.print(f"{len(examples)} examples, {steps} steps of {batch_size}", highlight=False)
    with progress_bar() as bars:
        task = bars.add_task("span reader", total=steps)

        def on_step(step: int, loss: float) -> None:
            bars.update(task, completed=step, description=f"span reader (loss {loss:.3f})")

        try:
            weights = train_span_reader(out, examples, settings, log=console.print, on_step=on_step)
        except ValueError as e:
            fail(str(e))
    console.print(f"span reader -> {weights}", highlight=False)
