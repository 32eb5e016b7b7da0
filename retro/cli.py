"""The `retro` command line (Typer): model-side commands and the `index` sub-commands.

Each command group lives in its own module and is mounted here; `service.cli` adds `serve` and
`demo` on top, so that this package never imports the service. Bad input exits with code 2 and a
one-line message (`fail`).
"""

from __future__ import annotations

import typer
from rich.console import Console

from retro.eval_cli import eval_command
from retro.index_cli import index_app
from retro.train_cli import train_command

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="RETRO: retrieval-enhanced language models."
)
console = Console(stderr=True)
app.add_typer(index_app, name="index")
app.command("train")(train_command)
app.command("eval")(eval_command)


def fail(message: str) -> None:
    """Prints a one-line error and exits with code 2 (the CLI's bad-input convention)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command("info")
def info(preset: str = typer.Option("small", help="a preset name from retro.config.PRESETS")) -> None:
    """Prints a preset's configuration and parameter counts."""
    from retro.config import PRESETS
    from retro.model import Retro

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    model = Retro(PRESETS[preset])
    console.print_json(PRESETS[preset].to_json())
    counts = model.parameter_counts()
    console.print(f"parameters: {counts['total']:,} total, {counts['non_embedding']:,} non-embedding")
