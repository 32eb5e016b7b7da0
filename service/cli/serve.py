"""`retro serve`: the OpenAI-compatible HTTP API and the comparison web page (uvicorn).

Options left out fall back to the `RETRO_*` environment variables (`service.settings.Settings`);
an unsafe or impossible start (a public bind without an API key, a missing folder) fails with one
line and exit code 2 before anything loads.
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from service.cli.console import fail


def serve_command(
    model: Path | None = typer.Option(None, help="RETRO checkpoint folder (env RETRO_MODEL)"),
    index: Path | None = typer.Option(None, help="index folder (CURRENT + versions) (env RETRO_INDEX)"),
    compare_model: Path | None = typer.Option(
        None, help="a second retro checkpoint or a Hugging Face causal-LM folder (env RETRO_COMPARE_MODEL)"
    ),
    rag_model: Path | None = typer.Option(
        None,
        help="a retrieval-in-prompt checkpoint (e.g. trained with --preset demo-rag) served beside RETRO "
        "on the same index (env RETRO_RAG_MODEL)",
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
        model=model, index=index, compare_model=compare_model, rag_model=rag_model, host=host, port=port,
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
        ("rag model", settings.rag_model),
    ):
        if path is not None and not path.is_dir():
            fail(f"the {name} folder {path} does not exist")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
