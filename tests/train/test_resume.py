"""Kill a real `astra train` with SIGKILL, resume it, and compare with an unbroken run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import run_astra

STEPS = 40


def write_recipe(path: Path, tiny_model_dir: Path, out: Path) -> Path:
    path.write_text(
        f"name: resume\nbase_model: {tiny_model_dir}\nseed: 5\n"
        "data:\n  sources: ['builtin:orrery']\n  split: {val: 0.05, test: 0}\n"
        f"train:\n  output_dir: {out}\n  max_steps: {STEPS}\n  batch_size: 2\n  max_seq_len: 192\n"
        "  learning_rate: 0.001\n  save_steps: 8\n  eval_steps: 20\n  save_total_limit: 2\n"
    )
    return path


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_killed_run_resumes_on_the_same_curve(tmp_path: Path, tiny_model_dir: Path) -> None:
    reference = run_astra(
        "train", str(write_recipe(tmp_path / "a.yaml", tiny_model_dir, tmp_path / "a"))
    )
    assert reference.exit_code == 0, reference.stderr

    recipe = write_recipe(tmp_path / "b.yaml", tiny_model_dir, tmp_path / "b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra_tune", "train", str(recipe)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    checkpoint = tmp_path / "b" / "checkpoints" / "checkpoint-16" / "trainer_state.json"
    give_up = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < give_up and not checkpoint.is_file():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "b" / "adapter").exists()

    again = run_astra("train", str(recipe))
    assert again.exit_code == 2
    assert "--resume" in again.stderr
    resumed = run_astra("train", str(recipe), "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    # bitsandbytes (imported by peft) warns about a missing optional hub kernel on
    # avx512_bf16 CPUs; LoRA training has nothing to do with it.
    assert "kernels-community" not in resumed.stderr

    expected, got = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(got) == list(range(1, STEPS + 1))  # one continuous curve, no repeats
    for step in range(1, STEPS + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-3, abs=1e-3), step
