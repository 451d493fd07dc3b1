"""`astra serve`: the OpenAI- and Ollama-compatible server."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from astra_tune.recipe import describe
from astra_tune.serve.settings import ServeSettings


def _help(name: str) -> str:
    field = ServeSettings.model_fields[name]
    return describe(ServeSettings, name, f"Default {field.default}." if field.default else "")


def serve(
    models: list[str] = typer.Option(
        None, "--model", "-m", help=describe(ServeSettings, "models", "Repeatable.")
    ),
    host: str | None = typer.Option(None, "--host", help=_help("host")),
    port: int | None = typer.Option(None, "--port", help=_help("port")),
    api_keys: list[str] = typer.Option(
        None,
        "--api-key",
        help=describe(ServeSettings, "api_keys", "Sent as Authorization: Bearer; repeatable."),
    ),
    max_queue: int | None = typer.Option(None, "--max-queue", help=_help("max_queue")),
    parallel: str | None = typer.Option(None, "--parallel", help=_help("parallel")),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help=_help("batch_tokens")),
    max_loaded: int | None = typer.Option(None, "--max-loaded", help=_help("max_loaded")),
    keep_alive: float | None = typer.Option(None, "--keep-alive", help=_help("keep_alive")),
    n_ctx: int | None = typer.Option(None, "--n-ctx", help=_help("n_ctx")),
    config: Path | None = typer.Option(
        None, "--config", help="YAML file with these settings and more (every key: docs/serve.md)."
    ),
) -> None:
    """Serve models over the OpenAI (/v1) and Ollama (/api) APIs, with /metrics and /health."""
    import uvicorn

    from astra_tune.serve.app import build_server, check_port, create_app
    from astra_tune.serve.settings import load_settings

    settings = load_settings(
        config,
        {
            "models": models or [],
            "host": host,
            "port": port,
            "api_keys": api_keys or [],
            "max_queue": max_queue,
            "parallel": parallel,
            "batch_tokens": batch_tokens,
            "max_loaded": max_loaded,
            "keep_alive": keep_alive,
            "n_ctx": n_ctx,
        },
    )
    check_port(settings.host, settings.port)
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
