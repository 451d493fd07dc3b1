from __future__ import annotations

import re

from astra_tune import __version__
from tests.cli_runner import run_astra


def test_help_lists_exactly_the_command_groups_that_exist() -> None:
    result = run_astra("--help")
    assert result.exit_code == 0
    commands = re.findall(r"^│ (\w+) ", result.stdout, flags=re.MULTILINE)
    assert sorted(commands) == [
        "chat",
        "data",
        "doctor",
        "eval",
        "experiment",
        "export",
        "import",
        "modelfile",
        "models",
        "push",
        "quickstart",
        "recipe",
        "registry",
        "rollout",
        "run",
        "serve",
        "train",
    ]


def test_version() -> None:
    result = run_astra("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"astra-tune {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    result = run_astra("trian")
    assert result.exit_code == 2
    assert "No such command" in result.stderr
    assert "Traceback" not in result.stderr
