"""The `retro` console entry point: every command of `retro.cli` plus the service's own `serve`.

It lives in `service` so that the dependency direction holds (service -> retro -> index): the
model package never imports the service, yet one `retro` command serves, builds and trains.
Options left out fall back to the `RETRO_*` environment variables (service.settings.Settings).
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from retro.cli import app, fail

__all__ = ["app"]


@app.command("serve")
def serve(
    model: Path | None = typer.Option(None, help="RETRO checkpoint folder (env RETRO_MODEL)"),
    index: Path | None = typer.Option(None, help="index folder (CURRENT + versions) (env RETRO_INDEX)"),
    compare_model: Path | None = typer.Option(
        None, help="a second retro checkpoint or a Hugging Face causal-LM folder (env RETRO_COMPARE_MODEL)"
    ),
    host: str | None = typer.Option(None, help="address to bind (env RETRO_HOST, default 127.0.0.1)"),
    port: int | None = typer.Option(None, help="port (env RETRO_PORT, default 8000)"),
    api_key: str | None = typer.Option(
        None, help="key for mutating endpoints; required off loopback (env RETRO_API_KEY)"
    ),
    device: str | None = typer.Option(
        None, help="torch device of the models (env RETRO_DEVICE, default cpu)"
    ),
    corpus_root: Path | None = typer.Option(
        None, help="rebuilds may read corpora under this folder only (env RETRO_CORPUS_ROOT)"
    ),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serves the OpenAI-compatible HTTP API and the comparison web page."""
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    given = dict(
        model=model, index=index, compare_model=compare_model, host=host, port=port,
        api_key=api_key, device=device, corpus_root=corpus_root,
    )  # fmt: skip
    try:
        settings = Settings(**{name: value for name, value in given.items() if value is not None})
        settings.check_bind()
    except (ValidationError, ValueError) as e:
        fail(str(e))
    if settings.model is None:
        fail("no model: pass --model RUN (a checkpoint folder) or set RETRO_MODEL")
    for name, path in (
        ("model", settings.model),
        ("index", settings.index),
        ("compare model", settings.compare_model),
    ):
        if path is not None and not path.is_dir():
            fail(f"the {name} folder {path} does not exist")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)


@app.command("demo")
def demo(
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
    from service import demo as stages
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
        if train:
            retro_dir, baseline_dir = stages.train_models(paths)
        else:
            retro_dir, baseline_dir = stages.shipped_models()
        stages.console.print(f"models: {retro_dir} and {baseline_dir}", highlight=False)
        # the encoder loads only where something must be embedded: a cached demo starts faster
        stages.ensure_index(paths.index, retro_dir, stages.INDEX_SOURCES, device)
        stages.add_heldout_facts(paths.index, retro_dir, device)
        settings = Settings(
            model=retro_dir, index=paths.index, compare_model=baseline_dir, host=host, port=port,
            device=model_device, index_device=device, rebuild_sources=["facts", "wiki-vital"],
        )  # fmt: skip
        settings.check_bind()
    except (CheckpointError, RuntimeError, ValueError) as e:
        hint = "" if train else " (or run `make demo TRAIN=1` to train the demo models here)"
        fail(f"{e}{hint}")
    if not serve_after:
        stages.console.print(f"demo prepared under {paths.data}; serve it with `retro demo`", highlight=False)
        return
    base_url = f"http://{host}:{port}"
    threading.Thread(target=stages.announce_when_ready, args=(base_url,), daemon=True).start()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


if __name__ == "__main__":  # `python -m service.cli`, as the demo recipe runs its commands
    app()
