"""docs/recipe.md, docs/serve.md and docs/cli.md, generated from the recipe schema, the
server settings and the CLI itself.

`python -m astra_tune.reference_docs` rewrites them; a test fails when one is stale, so
the reference can never drift from the code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"


def recipe_markdown() -> str:
    """Every recipe field: path, type, default and meaning, grouped by section."""
    from astra_tune.recipe import describe_fields

    lines = [
        "# Recipe reference",
        "",
        "Generated from the recipe schema (`src/astra_tune/recipe.py`) by",
        "`python -m astra_tune.reference_docs`; do not edit by hand. `astra recipe show`",
        "prints the same table, and `astra recipe validate FILE` checks a recipe against it.",
        "Examples: [`recipes/`](../recipes/).",
    ]
    section = None
    for row in describe_fields():
        top = row.path.split(".")[0] if "." in row.path else ""
        if top != section:
            section = top
            lines += ["", f"## {top or 'top level'}", "", "| field | type | default | meaning |",
                      "|---|---|---|---|"]  # fmt: skip
        lines.append(f"| `{row.path}` | {_cell(row.type)} | {_cell(row.default)} | "
                     f"{_cell(row.description)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def serve_markdown() -> str:
    """Every `astra serve` setting: YAML key, environment variable, type, default, meaning."""
    from astra_tune.recipe import describe_fields
    from astra_tune.serve.settings import ENV_PREFIX, ServeSettings

    lines = [
        "# Server settings reference",
        "",
        "Generated from `src/astra_tune/serve/settings.py` by `python -m",
        "astra_tune.reference_docs`; do not edit by hand. Each setting comes from a flag of",
        "`astra serve` (see [cli.md](cli.md)), else from its environment variable (lists",
        "comma-separated), else from the YAML file given with `--config`; flags win.",
        "",
        "| key | environment | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for row in describe_fields(ServeSettings):
        top = row.path.split(".")[0].split("[")[0]
        env = f"`{ENV_PREFIX}{top.upper()}`" if row.path == top else ""
        lines.append(f"| `{row.path}` | {env} | {_cell(row.type)} | {_cell(row.default)} | "
                     f"{_cell(row.description)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def cli_markdown() -> str:
    """Every command and subcommand with its usage, options and help, as `--help` shows."""
    import typer.main

    from astra_tune.cli.app import app

    command = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the CLI by `python -m astra_tune.reference_docs`; do not edit by hand.",
    ]
    lines += _command_lines(command, "astra")
    return "\n".join(lines) + "\n"


def _command_lines(command: Any, name: str) -> list[str]:
    # typer ships its own copy of click; its classes are reached through the command.
    context_class = type(command).context_class
    lines = ["", f"## `{name}`", ""]
    help_text = _strip_markup((command.help or "").strip())
    for paragraph in help_text.split("\n\n") if help_text else []:
        if paragraph.lstrip().startswith("astra "):  # usage examples stay verbatim
            lines += ["```", paragraph.strip("\n"), "```", ""]
        else:
            lines += [" ".join(paragraph.split()), ""]
    context = context_class(command, info_name=name)
    pieces = command.collect_usage_pieces(context)
    lines += ["```", f"{name} {' '.join(pieces)}".rstrip(), "```"]
    params = [p for p in command.params if p.get_help_record(context)]
    if params:
        lines += ["", "| option | meaning |", "|---|---|"]
        for param in params:
            flags, meaning = param.get_help_record(context)
            lines.append(f"| `{flags}` | {_cell(_strip_markup(meaning))} |")
    if hasattr(command, "commands"):
        for sub_name in sorted(command.commands):
            lines += _command_lines(command.commands[sub_name], f"{name} {sub_name}")
    return lines


def _strip_markup(text: str) -> str:
    import re

    return re.sub(r"\[/?[a-z ]+\]", "", text)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def main() -> None:
    (DOCS / "recipe.md").write_text(recipe_markdown(), encoding="utf-8")
    (DOCS / "serve.md").write_text(serve_markdown(), encoding="utf-8")
    (DOCS / "cli.md").write_text(cli_markdown(), encoding="utf-8")


if __name__ == "__main__":
    main()
