"""`retro info`: a preset's configuration and parameter counts, without training anything."""

from __future__ import annotations

import typer

from service.cli.console import console, fail


def info_command(
    preset: str = typer.Option("small", help="a preset name from retro.config.PRESETS"),
) -> None:
    """Prints a preset's configuration and parameter counts."""
    from retro.config import PRESETS
    from retro.model import Retro

    if preset not in PRESETS:
        fail(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    model = Retro(PRESETS[preset])
    console.print_json(PRESETS[preset].to_json())
    counts = model.parameter_counts()
    console.print(f"parameters: {counts['total']:,} total, {counts['non_embedding']:,} non-embedding")
