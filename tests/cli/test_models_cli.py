from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.models.catalog import CATALOG, DEFAULT_MODEL
from tests.cli_runner import run_astra


def test_list_shows_the_whole_catalog() -> None:
    result = run_astra("models", "list")
    assert result.exit_code == 0
    for entry in CATALOG:
        assert entry.name in result.stdout


def test_pull_unknown_model_suggests_a_name() -> None:
    result = run_astra("models", "pull", "smollm-135m-instruct")
    assert result.exit_code == 2
    assert "did you mean 'smollm2-135m-instruct'?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_pull_default_then_list_shows_it_cached(default_model_dir: Path) -> None:
    result = run_astra("models", "pull", DEFAULT_MODEL)
    assert result.exit_code == 0, result.stderr
    assert str(default_model_dir) in result.stdout.replace("\n", "")
    listing = run_astra("models", "list")
    [row] = [line for line in listing.stdout.splitlines() if DEFAULT_MODEL in line]
    assert "yes" in row
