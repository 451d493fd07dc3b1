"""Progress display for long work: rich bars with rate and ETA, written to stderr.

Progress goes to stderr so that commands whose stdout is data (`astra chat -p`) stay clean.
"""

from __future__ import annotations

import contextlib
import logging
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


_llama_log_callback: object = None  # kept alive: llama.cpp holds a pointer to it


@contextlib.contextmanager
def quiet_llama_logs() -> Iterator[None]:
    """Let llama.cpp print its errors only; not its per-tensor notes and warnings.

    llama-cpp-python's own log hook maps ggml's levels from an older enum (it passes
    warnings on as errors), so it cannot filter them; we install a hook that reads the
    current one (ggml.h: 1 debug, 2 info, 3 warn, 4 error, 5 continuation). Installed
    once, for the process: llama.cpp also logs when a model is freed, long after loading.
    """
    global _llama_log_callback
    if _llama_log_callback is None:
        import ctypes

        import llama_cpp

        last = [0]

        def forward(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
            if level != 5:
                last[0] = level
            if last[0] == 4:
                sys.stderr.write(text.decode("utf-8", "replace"))

        _llama_log_callback = llama_cpp.llama_log_callback(forward)
        llama_cpp.llama_log_set(_llama_log_callback, ctypes.c_void_p(0))
    yield
