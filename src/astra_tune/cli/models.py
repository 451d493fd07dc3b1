"""`astra models`: the base-model catalog and the local cache."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from astra_tune.cli.output import human_bytes, stdout_console
from astra_tune.models.catalog import CATALOG, DEFAULT_MODEL
from astra_tune.models.resolve import cached_path, resolve_model

app = typer.Typer(help="Base models: list the catalog, prepare one for use.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Show the catalog and which models are prepared locally."""
    table = Table(title="Base models", caption="* the embedded default: no download needed")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("cached", no_wrap=True)
    table.add_column("source")
    table.add_column("licence")
    for entry in CATALOG:
        path = cached_path(entry)
        cached = f"[green]yes[/] {human_bytes(_dir_size(path))}" if path else "no"
        name = entry.name + (" *" if entry.name == DEFAULT_MODEL else "")
        source = "bundled" if entry.source == "bundled" else entry.hub_id
        table.add_row(
            name, entry.params, cached, f"{source}\n[dim]{entry.description}[/]", entry.license
        )
    stdout_console().print(table)


@app.command("pull")
def pull(
    name: str = typer.Argument(..., help="Catalog name, .gguf file, HF directory or hub id."),
    force: bool = typer.Option(False, "--force", help="Rebuild or re-download even if cached."),
) -> None:
    """Prepare a model: dequantize a GGUF or download from the hub, once."""
    console = Console(stderr=True)
    resolved = resolve_model(name, force=force, console=console)
    stdout_console().print(f"[green]ready:[/] {resolved.spec} → {resolved.path}")


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
