"""One run layout: train.data_dir and export.output_dir are honoured by every stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astra_tune.data.prepare import prepare_data
from astra_tune.recipe import DataConfig, validate_recipe
from astra_tune.runs import RunLayout
from astra_tune.train.run import train_model
from tests.cli_runner import run_astra


@pytest.fixture(scope="module")
def elsewhere_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Any:
    """A tiny LoRA run whose prepared data lives outside the run directory."""
    root = tmp_path_factory.mktemp("layout")
    data = root / "shared-data"
    config = DataConfig.model_validate(
        {"sources": ["builtin:orrery"], "split": {"val": 0.05, "test": 0.1}}
    )
    prepare_data(config, data, base_model=str(tiny_model_dir), seed=0)
    recipe = validate_recipe(
        {
            "name": "tiny-elsewhere",
            "base_model": str(tiny_model_dir),
            "seed": 0,
            "train": {
                "output_dir": str(root / "run"),
                "data_dir": str(data),
                "max_steps": 2,
                "batch_size": 2,
                "max_seq_len": 192,
                "eval_steps": None,
                "save_steps": 2,
                "warmup_ratio": 0.0,
            },
            "eval": {"after_training": False},
            "export": {"quant": ["f16"], "output_dir": str(root / "gguf")},
        }
    )
    train_model(recipe)
    return root


def test_the_layout_answers_from_the_saved_recipe(elsewhere_run: Path) -> None:
    layout = RunLayout.find(elsewhere_run / "run" / "adapter")
    assert layout is not None
    assert layout.root == (elsewhere_run / "run").resolve()
    assert layout.test == elsewhere_run / "shared-data" / "test.jsonl"
    assert layout.trained == layout.root / "adapter"
    assert layout.export_dir == (elsewhere_run / "gguf").resolve()
    assert not layout.prepared.exists()  # nothing was prepared inside the run
    assert RunLayout.find(elsewhere_run / "shared-data") is None


def test_eval_and_export_of_a_run_need_no_paths(elsewhere_run: Path) -> None:
    run = elsewhere_run / "run"
    evaluated = run_astra(
        "eval", str(run), "--samples", "3", "--metrics", "rougeL", "--max-new-tokens", "6"
    )
    assert evaluated.exit_code == 0, evaluated.stderr
    scores = json.loads((run / "eval" / "scores.json").read_text())
    assert scores["examples"] == 3
    records = [json.loads(line) for line in (elsewhere_run / "shared-data" / "test.jsonl")
               .read_text().splitlines()]  # fmt: skip
    samples = [json.loads(line) for line in (run / "eval" / "samples.jsonl").read_text()
               .splitlines()]  # fmt: skip
    assert samples[0]["reference"] == records[0]["messages"][-1]["content"]

    exported = run_astra("export", str(run))
    assert exported.exit_code == 0, exported.stderr
    out = elsewhere_run / "gguf"
    assert sorted(p.name for p in out.glob("*.gguf")) == ["tiny-elsewhere-f16.gguf"]
    verify = json.loads((out / "verify.json").read_text())
    # The end-of-turn check asked for one of the run's own trained answers, found in
    # train.data_dir: without it, answer_matches stays unset.
    assert verify["files"][0]["answer_matches"] is not None
