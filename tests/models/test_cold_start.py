"""A newcomer's first run: the model cache is empty, and the first pull may be interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from astra_tune.models.catalog import DEFAULT_MODEL
from tests.cli_runner import run_astra

QUESTION = "What is the capital of France? Answer in one word."


@pytest.mark.slow
def test_killed_pull_leaves_no_model_and_the_next_chat_recovers(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"ASTRA_HOME": str(home)}
    models = home / "models"
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra_tune", "models", "pull", DEFAULT_MODEL],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it while it is writing the converted weights (the staging directory exists).
    give_up = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < give_up:
        if models.is_dir() and any(
            p.name.startswith(f".{DEFAULT_MODEL}.tmp-") for p in models.iterdir()
        ):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the pull finished before it could be interrupted"
    assert not (models / DEFAULT_MODEL).exists()

    result = run_astra("chat", DEFAULT_MODEL, "-p", QUESTION, env=env)
    assert result.exit_code == 0, result.stderr
    assert "Paris" in result.stdout
    assert "dequantizing tensors" in result.stderr  # the cold start showed its progress
    assert sorted(p.name for p in models.iterdir()) == [DEFAULT_MODEL]  # leftovers removed
