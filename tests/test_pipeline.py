"""`astra run`: stages in order, skipped when unchanged, resumed when interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from astra_tune.pipeline import run_pipeline
from astra_tune.recipe import load_recipe
from tests.cli_runner import run_astra

RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name
    assert path.read_text().lstrip().startswith("#")  # each explains itself


def tiny_recipe(tmp_path: Path, tiny_model_dir: Path, **train: object) -> Path:
    recipe = {
        "name": "tiny-pipeline",
        "base_model": str(tiny_model_dir),
        "seed": 0,
        "data": {"sources": ["builtin:orrery"], "split": {"val": 0.0, "test": 0.03}},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2,
                  "max_seq_len": 192, "eval_steps": None, "save_steps": 2,
                  "lora": {"r": 4, "alpha": 8}, **train},
        "eval": {"metrics": ["rougeL", "perplexity"], "max_new_tokens": 4, "bootstrap": 200},
        "export": {"quant": ["f16"], "verify": False},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def statuses(result: object) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}  # type: ignore[attr-defined]


def test_stages_run_then_skip_and_forced_stages_only_ripple_on_change(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = tiny_recipe(tmp_path, tiny_model_dir)
    first = run_pipeline(load_recipe(path))
    assert statuses(first) == {
        **dict.fromkeys(("data", "train", "eval", "export", "push"), "ran"),
        "augment": "nothing to do",
    }
    assert first.reference == "tiny-pipeline:1.0.0"
    figures = {s.name: s.figures for s in first.stages}
    assert figures["data"]["records"].startswith("train ")
    assert figures["train"]["steps"] == "2"
    assert "rougeL" in figures["eval"]
    assert figures["export"]["tiny-pipeline-f16.gguf"].endswith("MiB")

    again = run_pipeline(load_recipe(path))
    assert set(statuses(again).values()) == {"skipped", "nothing to do"}  # augment: not set
    assert again.reference == "tiny-pipeline:1.0.0"

    # Export again: the same bytes come out, so the push after it stays skipped.
    forced = run_pipeline(load_recipe(path), force=("export",))
    assert statuses(forced)["export"] == "ran"
    assert statuses(forced)["push"] == "skipped"

    # Push takes what the last export wrote, not whatever else lies in its directory.
    export_dir = tmp_path / "run" / "export"
    stray = export_dir / "tiny-pipeline-q8_0.gguf"
    stray.write_bytes((export_dir / "tiny-pipeline-f16.gguf").read_bytes())
    repushed = run_pipeline(load_recipe(path), force=("push",))
    # The stray file would have made new content (a 1.0.1); the same content is 1.0.0.
    assert repushed.reference == "tiny-pipeline:1.0.0"
    from astra_tune.registry.store import Registry

    assert [v["version"] for v in Registry().list_versions("tiny-pipeline")] == ["1.0.0"]
    assert set(Registry().resolve("tiny-pipeline:1.0.0").models) == {"f16"}
    stray.unlink()

    # A changed eval section reruns eval only.
    changed = run_pipeline(load_recipe(path, ["eval.max_new_tokens=6"]))
    assert statuses(changed) == {"data": "skipped", "augment": "nothing to do", "train": "skipped",
                                 "eval": "ran", "export": "skipped", "push": "skipped"}  # fmt: skip
    until = run_pipeline(load_recipe(path, ["train.learning_rate=1e-3"]), until="train")
    assert statuses(until) == {"data": "skipped", "augment": "nothing to do", "train": "ran",
                               "eval": "not run", "export": "not run",
                               "push": "not run"}  # fmt: skip

    table = run_astra("run", str(path), "--until", "train", "--set", "train.learning_rate=1e-3")
    assert table.exit_code == 0, table.stderr
    assert "unchanged, skipped" in table.stdout
    bad = run_astra("run", str(path), "--from", "deploy")
    assert bad.exit_code == 2
    assert "unknown stage 'deploy'" in bad.stderr


def test_a_killed_run_resumes_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tiny_recipe(tmp_path, tiny_model_dir, max_steps=40, save_steps=4)
    command = [sys.executable, "-m", "astra_tune", "run", str(path), "--until", "train"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})  # fmt: skip
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*/trainer_state.json")):
            break  # a complete checkpoint (the trainer state is written last)
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert saved
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert state["running"]["stage"] == "train"
    result = run_pipeline(load_recipe(path), until="train")
    train = next(s for s in result.stages if s.name == "train")
    assert train.status == "ran"
    assert train.figures["resumed"].startswith("checkpoint-")
    assert int(train.figures["resumed"].split("-")[1]) >= saved[0]
    assert train.figures["steps"] == "40"


def test_quickstart_recipe_is_the_example_with_the_run_beside_it(tmp_path: Path) -> None:
    from astra_tune.cli.run import write_quickstart_recipe

    path = write_quickstart_recipe(tmp_path / "qs")
    recipe = load_recipe(path)
    example = load_recipe(RECIPES / "cpu-quickstart.yaml")
    assert recipe.train.output_dir == str(tmp_path / "qs" / "run")  # relative to the file
    assert recipe.model_copy(update={"train": example.train}) == example
    assert recipe.train.model_copy(update={"output_dir": None}) == example.train
    path.write_text(path.read_text().replace("epochs: 2.5", "epochs: 3"))
    assert load_recipe(write_quickstart_recipe(tmp_path / "qs")).train.epochs == 3  # kept
