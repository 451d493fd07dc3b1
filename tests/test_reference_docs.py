"""docs/recipe.md and docs/cli.md match the code they are generated from."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.reference_docs import cli_markdown, recipe_markdown, serve_markdown

DOCS = Path(__file__).parents[1] / "docs"
FIX = "regenerate with: .venv/bin/python -m astra_tune.reference_docs"


@pytest.mark.parametrize(("name", "render"), [("recipe.md", recipe_markdown),
                                               ("serve.md", serve_markdown),
                                               ("cli.md", cli_markdown)])  # fmt: skip
def test_generated_reference_is_up_to_date(name: str, render: object) -> None:
    assert callable(render)
    assert (DOCS / name).read_text() == render(), f"docs/{name} is stale; {FIX}"


def test_reference_covers_every_field_and_command() -> None:
    recipe = recipe_markdown()
    for field in ("`eval.after_training`", "`registry.aliases`", "`export.quant`",
                  "`train.lora.r`", "`data.split.test`"):  # fmt: skip
        assert field in recipe
    for field in ("`data.sources[].path`", "`data.sources[].assign_to`"):
        assert field in recipe
    assert "| `eval.judge.model` | str | (required when eval.judge is set) |" in recipe
    serve = serve_markdown()
    keys = ("metrics_public", "cors_origins", "n_threads", "drain_seconds", "upstreams[].base_url")
    for key in keys:
        assert f"| `{key}` |" in serve
    assert "| `drain_seconds` | `ASTRA_SERVE_DRAIN_SECONDS` | float | 30.0 |" in serve
    cli = cli_markdown()
    for command in ("## `astra run`", "## `astra quickstart`", "## `astra eval`",
                    "## `astra push ollama`", "## `astra registry tag`"):  # fmt: skip
        assert command in cli
