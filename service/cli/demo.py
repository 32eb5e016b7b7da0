"""`retro demo`: from a fresh checkout to a served demo in one command, every stage cached.

This module owns the command's options and the order of the stages; the stages and the recipe of
the demo models are `service.cli.demo_stages`.
"""

from __future__ import annotations

from pathlib import Path

import typer

import service.cli.demo_stages as stages
from service.cli.console import console, fail


def demo_command(
    data_dir: Path = typer.Option(
        Path("data"), "--data-dir", envvar="RETRO_DATA_DIR", help="where the demo keeps its index and runs"
    ),
    train: bool = typer.Option(
        False, "--train", help="train the demo models here (the models' recipe) instead of using models/"
    ),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="serve when ready (default) or stop"),
    host: str = typer.Option("127.0.0.1", envvar="RETRO_HOST", help="address to bind"),
    port: int = typer.Option(8000, envvar="RETRO_PORT", help="port"),
    device: str = typer.Option(
        "auto", envvar="RETRO_DEVICE", help="device of the models and the encoder: auto, cpu or cuda"
    ),
) -> None:
    """Builds everything the demo needs under DATA_DIR (cached) and serves it on http://HOST:PORT."""
    import threading

    import uvicorn

    from retro.checkpoint import CheckpointError
    from retro.devices import resolve_device
    from service.app import create_app
    from service.settings import Settings

    try:
        model_device = str(resolve_device(device))
    except ValueError as e:
        fail(str(e))
    paths = stages.DemoPaths(data_dir.resolve())
    if serve_after and not stages.port_is_free(host, port):
        fail(f"{host}:{port} is already in use: stop what serves there or pick another --port (RETRO_PORT)")
    try:
        models = stages.train_models(paths) if train else stages.shipped_models()
        served = ", ".join(str(p) for p in (models.retro, models.baseline, models.rag) if p is not None)
        console.print(f"models: {served}", highlight=False)
        # the encoder loads only where something must be embedded: a cached demo starts faster
        stages.ensure_index(paths.index, models.retro, stages.INDEX_SOURCES, device)
        stages.add_heldout_facts(paths.index, models.retro, device)
        settings = Settings(
            model=models.retro, index=paths.index, compare_model=models.baseline, rag_model=models.rag,
            host=host, port=port,
            device=model_device, index_device=device, rebuild_sources=["facts", "wiki-vital"],
        )  # fmt: skip
        settings.check_bind()
    except (CheckpointError, RuntimeError, ValueError) as e:
        hint = "" if train else " (or run `make demo TRAIN=1` to train the demo models here)"
        fail(f"{e}{hint}")
    if not serve_after:
        console.print(f"demo prepared under {paths.data}; serve it with `retro demo`", highlight=False)
        return
    base_url = f"http://{host}:{port}"
    threading.Thread(target=stages.announce_when_ready, args=(base_url,), daemon=True).start()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
