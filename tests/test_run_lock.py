"""RUN/.lock: two processes never write one run directory; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.pipeline import run_pipeline
from astra_tune.recipe import validate_recipe
from astra_tune.runs import run_lock
from astra_tune.train.run import train_model

HOLD = """
import sys, time
from pathlib import Path
from astra_tune.runs import run_lock
with run_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""

Held = tuple[Path, "subprocess.Popen[str]"]


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    root = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE,
                               text=True)  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    yield root, process
    process.kill()
    process.wait()


def test_a_second_process_is_refused_with_the_holders_pid(holder: Held) -> None:
    root, process = holder
    recipe = validate_recipe({"name": "x", "train": {"output_dir": str(root)}})
    for attempt in (lambda: train_model(recipe), lambda: run_pipeline(recipe)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert f"in use by another astra process (pid {process.pid})" in caught.value.what
        assert caught.value.where == str(root.resolve())
    assert not (root / "checkpoints").exists()  # refused before anything was written


def test_a_killed_holder_leaves_the_run_free(holder: Held) -> None:
    root, process = holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with run_lock(root):
                break
        except ConfigError:
            assert time.monotonic() < deadline, "the kernel never dropped the dead lock"
            time.sleep(0.05)
    assert (root / ".lock").read_text().strip() == str(os.getpid())


def test_one_process_may_lock_its_own_run_again(tmp_path: Path) -> None:
    with run_lock(tmp_path / "run"), run_lock(tmp_path / "run"):
        pass  # `astra run` holds the lock while its train stage takes it again
    with run_lock(tmp_path / "run"):
        pass  # and it was released
