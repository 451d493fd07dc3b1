"""`astra recipe`: check a recipe file, or see every field with its default."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from astra_tune.recipe import describe_fields, load_recipe

app = typer.Typer(help="Run recipes: validate a file, show every field.", no_args_is_help=True)


@app.command("validate")
def validate(file: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
    """Check a recipe; every problem is reported with its field path and file:line."""
    from astra_tune.data.sources import missing_sources
    from astra_tune.errors import Problem
    from astra_tune.recipe import validate_recipe
    from astra_tune.yaml_lines import load_yaml, require_mapping

    doc = load_yaml(file)
    data = require_mapping(doc)
    section = data.get("data")
    entries = section.get("sources") if isinstance(section, dict) else None
    absent = [
        Problem(
            f"data.sources[{i}]", f"file not found: {spec}", doc.location(("data", "sources", i))
        )
        for i, spec in missing_sources(entries)
    ]
    recipe = validate_recipe(data, doc, absent)
    Console().print(
        f"[green]valid:[/] {file} (run {recipe.name!r}, base model {recipe.base_model})"
    )


@app.command("show")
def show(
    file: Path | None = typer.Argument(None, help="A recipe to show resolved; omit for defaults."),
) -> None:
    """Print every recipe field with its default (or its value in FILE) and description."""
    values = load_recipe(file).model_dump() if file else None
    table = Table(title=f"Recipe {file}" if file else "Recipe fields")
    table.add_column("field", style="bold")
    table.add_column("type")
    table.add_column("value" if file else "default")
    table.add_column("description")
    for row in describe_fields():
        value = row.default
        if values is not None:
            value = str(_lookup(values, row.path))
        table.add_row(row.path, row.type, value, row.description)
    Console().print(table)


def _lookup(values: dict, path: str) -> object:
    current: object = values
    for part in path.split("."):
        current = current[part] if isinstance(current, dict) else None
    return current
