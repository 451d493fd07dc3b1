"""Progress display for long work: rich bars with rate and ETA, written to stderr.

Progress goes to stderr so that commands whose stdout is data (`astra chat -p`) stay clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second in the task's `unit` field; blank for tasks without a unit."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        if unit is None:
            return Text("")
        if task.speed is None:
            return Text(f"  -- {unit}/s", style="progress.data.speed")
        return Text(f"{task.speed:6.1f} {unit}/s", style="progress.data.speed")


def stderr_console() -> Console:
    """A console on stderr (progress, status and errors)."""
    return Console(stderr=True)


def progress_bar(*, transient: bool = False, console: Console | None = None) -> Progress:
    """A progress display: description, bar, count, percentage, rate, elapsed and ETA."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console or stderr_console(),
        transient=transient,
    )


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """Hide transformers' own tqdm bars (loading, saving) while ours are on screen."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger's warnings for a while.

    Used around bitsandbytes imports: it warns when it cannot fetch an optional fused CPU
    kernel from the Hugging Face hub, yet 4-bit works without it (`astra doctor` checks).
    """
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def quiet_library_noise() -> Iterator[None]:
    """Hide library chatter during a stage whose progress we show ourselves.

    FutureWarnings about renamed transformers arguments (raised inside TRL) and the
    datasets/transformers tqdm bars would bury the rich progress display.
    """
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    with warnings.catch_warnings(), quiet_hf_progress(), quiet_logger("bitsandbytes"):
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            yield
        finally:
            if was_enabled:
                datasets.enable_progress_bars()


@contextlib.contextmanager
def quiet_llama_logs() -> Iterator[None]:
    """Keep only llama.cpp's errors: it logs every tensor it quantizes or adapts.

    llama-cpp-python routes llama.cpp's log through this logger, and a model logs again
    when it is freed, long after the call that loaded it; so the level is set for good,
    never restored to the chatty default.
    """
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    yield


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send C-level stderr to /dev/null for a moment.

    llama.cpp prints one line per adapter tensor it cannot place in a repacked CPU
    buffer (harmless: it falls back), bypassing the Python logger. Load failures still
    surface as Python exceptions, which we turn into our own errors.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
