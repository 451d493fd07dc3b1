"""Run the real `astra` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class CliResult:
    """What a real `astra` process did."""

    exit_code: int
    stdout: str
    stderr: str


def run_astra(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run the real `astra` command in a subprocess: exit codes and streams as users see them."""
    proc = subprocess.run(
        [sys.executable, "-m", "astra_tune", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=600,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
