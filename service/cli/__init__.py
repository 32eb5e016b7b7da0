"""The `retro` command line (Typer): every command, one module per command group, mounted here.

`retro index ...` (`index`), `retro reader ...` (`reader`), `train`, `eval`, `info`, `export`,
`serve` and `demo` (its stages in `demo_stages`); `console` holds what they share: the Rich
consoles, `fail` (bad input: one line, exit code 2) and the progress-bar columns. The wing sits at
the top of the dependency order (it may import `service`, `retro` and `index`; nothing imports a
command module) and is the only place that imports Typer. Options a command leaves out may fall
back to `RETRO_*` variables.
"""

from __future__ import annotations

import typer

from service.cli.demo import demo_command
from service.cli.eval import eval_command
from service.cli.export import export_command
from service.cli.index import index_app
from service.cli.info import info_command
from service.cli.reader import reader_app
from service.cli.serve import serve_command
from service.cli.train import train_command

__all__ = ["app"]

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="RETRO: retrieval-enhanced language models."
)
app.add_typer(index_app, name="index")
app.add_typer(reader_app, name="reader")
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("info")(info_command)
app.command("export")(export_command)
app.command("serve")(serve_command)
app.command("demo")(demo_command)
