"""The `retro` command line (Typer): model-side commands and the `index` sub-commands.

Each command group lives in its own module and is mounted here; `service.cli` adds `serve` and
`demo` on top, so that this package never imports the service. Bad input exits with code 2 and a
one-line message (`fail`).
"""

from __future__ import annotations

from pathlib import Path

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


EXPORT_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="a checkpoint folder (a run folder of `retro train`)"),
    out: Path = typer.Option(..., "--out", help="the folder to write: weights, config.json, tokenizer.json"),
    dtype: str = typer.Option("float32", help="weight type on disk: float32, float16 or bfloat16"),
    max_shard_mb: int = typer.Option(16, help="largest safetensors shard, in MiB"),
) -> None:
    """Writes a run's checkpoint without its training state, in smaller shards or a smaller type."""
    import torch

    from retro.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    if dtype not in EXPORT_DTYPES:
        fail(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}; got {dtype!r}")
    if max_shard_mb < 1:
        fail(f"--max-shard-mb must be >= 1; got {max_shard_mb}")
    if out.resolve() == run.resolve():
        fail("--out must differ from the run folder")
    try:
        model, tokenizer, meta = load_checkpoint(run)
    except CheckpointError as e:
        fail(str(e))
    meta = {**meta, "exported": {"from": str(run), "dtype": dtype}}
    save_checkpoint(
        out, model, tokenizer, meta, max_shard_bytes=max_shard_mb * 1024 * 1024, dtype=getattr(torch, dtype)
    )
    size = sum(p.stat().st_size for p in out.iterdir())
    console.print(f"exported {run} -> {out} ({size / 2**20:.1f} MiB, {dtype})", highlight=False)
