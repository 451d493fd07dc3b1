"""How the CLI shows errors: one message, what/where/fix, no traceback."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

from astra_tune.errors import AstraError

# Columns for stdout when it is not a terminal: rich would assume 80 and cut table cells
# ("top…"), which loses exactly what a script or a pasted log needs.
PIPED_WIDTH = 240


def stdout_console() -> Console:
    """The console for a command's results: the terminal's width (or $COLUMNS), or wide
    when piped."""
    chosen = sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(width=None if chosen else PIPED_WIDTH)


def print_error(error: AstraError, console: Console | None = None) -> None:
    """Print a user-facing error to stderr."""
    console = console or Console(stderr=True)
    console.print(f"[bold red]error:[/] {escape(error.what)}", highlight=False)
    if error.where:
        console.print(f"  [dim]where:[/] {escape(error.where)}", highlight=False)
    for line in error.details():
        console.print(f"  {escape(line)}", highlight=False)
    if error.fix:
        console.print(f"  [green]fix:[/] {escape(error.fix)}", highlight=False)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
