"""`astra serve`: the OpenAI- and Ollama-compatible server."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def serve(
    models: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Registry NAME[:TAG] or a .gguf file (repeatable; default: all).",
    ),
    host: str | None = typer.Option(None, "--host", help="Address (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8000)."),
    api_keys: list[str] = typer.Option(
        None, "--api-key", help="Require this key as Authorization: Bearer (repeatable)."
    ),
    max_queue: int | None = typer.Option(None, "--max-queue", help="Waiting requests per model."),
    max_loaded: int | None = typer.Option(None, "--max-loaded", help="Models loaded at once."),
    keep_alive: float | None = typer.Option(
        None, "--keep-alive", help="Idle seconds before unload."
    ),
    n_ctx: int | None = typer.Option(None, "--n-ctx", help="Context length per model."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with these settings."),
) -> None:
    """Serve models over the OpenAI (/v1) and Ollama (/api) APIs, with /metrics and /health."""
    import uvicorn

    from astra_tune.serve.app import build_server, create_app
    from astra_tune.serve.settings import load_settings

    settings = load_settings(
        config,
        {
            "models": models or [],
            "host": host,
            "port": port,
            "api_keys": api_keys or [],
            "max_queue": max_queue,
            "max_loaded": max_loaded,
            "keep_alive": keep_alive,
            "n_ctx": n_ctx,
        },
    )
    state = build_server(settings)
    catalog = state.catalog
    names = ", ".join(m.name for m in catalog.all()) or "(none: push one with astra registry push)"
    Console(stderr=True).print(
        f"serving {names}\n  OpenAI: http://{settings.host}:{settings.port}/v1  "
        f"Ollama: http://{settings.host}:{settings.port}/api",
        highlight=False,
    )
    uvicorn.run(
        create_app(state),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=int(settings.drain_seconds),
    )
