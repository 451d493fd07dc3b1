"""`astra recipe`: check a recipe file, or see every field with its default."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from astra_tune.cli.output import stdout_console
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
        for i, spec in missing_sources(entries, file.parent.resolve())
    ]
    recipe = validate_recipe(data, doc, absent)
    stdout_console().print(
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
        # Escaped: `list[source]` and `data.sources[].path` are not rich markup.
        table.add_row(*(escape(cell) for cell in (row.path, row.type, value, row.description)))
    stdout_console().print(table)


def _lookup(values: object, path: str) -> object:
    """The value at a field path; `sources[].path` gives each entry's value, in order."""
    head, _, rest = path.partition(".")
    name = head.removesuffix("[]")
    current = values.get(name) if isinstance(values, dict) else None
    if not rest:
        return current
    if head.endswith("[]"):
        return [_lookup(entry, rest) for entry in current or []]
    return _lookup(current, rest)
