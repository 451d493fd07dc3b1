"""train.epochs / train.batch_size = auto: passes and batch fitted to the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astra_tune.errors import ConfigError
from astra_tune.recipe import TrainConfig, validate_recipe
from astra_tune.train.run import train_model
from astra_tune.train.sizing import fit_to_data


def test_a_docs_folder_gets_batch_one_and_enough_passes() -> None:
    # Ollama's FAQ: 32 examples pack into 6 rows of 1024 tokens. The fixed defaults
    # (3 epochs at batch 8) made that 3 optimizer steps.
    sizing = fit_to_data(TrainConfig(), rows=6, examples=32)
    assert (sizing.batch_size, sizing.epochs, sizing.updates) == (1, 34, 204)
    assert sizing.epochs_auto
    assert sizing.batch_auto


def test_passes_are_capped_for_a_handful_of_rows() -> None:
    assert fit_to_data(TrainConfig(), rows=2, examples=3).epochs == 40


def test_mid_sized_data_keeps_three_passes_and_grows_the_batch() -> None:
    assert fit_to_data(TrainConfig(), rows=155, examples=1198).epochs == 3
    assert fit_to_data(TrainConfig(), rows=155, examples=1198).batch_size == 1
    sized = fit_to_data(TrainConfig(), rows=700, examples=5000)
    assert (sized.batch_size, sized.epochs, sized.updates) == (5, 3, 420)
    assert fit_to_data(TrainConfig(), rows=50_000, examples=8000).batch_size == 8


def test_large_data_gets_fewer_passes() -> None:
    assert fit_to_data(TrainConfig(), rows=2000, examples=10_000).epochs == 2
    assert fit_to_data(TrainConfig(), rows=20_000, examples=200_000).epochs == 1


def test_gradient_accumulation_counts_towards_the_batch() -> None:
    sized = fit_to_data(TrainConfig(grad_accum=4), rows=1024, examples=5000)
    assert sized.batch_size == 2  # 2 x 4 rows per update: still 128 updates a pass
    assert sized.updates == 3 * 128


def test_explicit_values_are_kept() -> None:
    sized = fit_to_data(TrainConfig(epochs=2.5, batch_size=4), rows=6, examples=32)
    assert (sized.epochs, sized.batch_size, sized.updates) == (2.5, 4, 5)
    assert not sized.epochs_auto
    assert not sized.batch_auto
    capped = fit_to_data(TrainConfig(max_steps=7), rows=6, examples=32)
    assert capped.updates == 7
    assert capped.describe() == (
        "32 examples in 6 rows: max_steps 7 at batch 1 (auto), 7 optimizer steps"
    )
    assert fit_to_data(TrainConfig(), rows=6, examples=32).describe() == (
        "32 examples in 6 rows: 34 epochs (auto) at batch 1 (auto), 204 optimizer steps"
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("epochs", 0, "a number above 0 or auto"), ("batch_size", 1.5, "a whole number"),
     ("batch_size", "lots", "a whole number of at least 1 or auto"), ("epochs", True, "auto")],
)  # fmt: skip
def test_bad_values_get_one_clear_problem(field: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_recipe({"name": "x", "train": {field: value}})
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].path == f"train.{field}"
    assert expected in caught.value.problems[0].message


def test_auto_is_resolved_at_train_time_and_recorded(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "three.jsonl"
    source.write_text("".join(
        json.dumps({"instruction": f"Where is gear {i}?", "output": f"Gear {i} is in box {i}."})
        + "\n"
        for i in range(3)
    ))  # fmt: skip
    recipe = validate_recipe({
        "name": "sized", "base_model": str(tiny_model_dir), "seed": 0,
        "data": {"sources": [str(source)], "split": {"val": 0.0, "test": 0.0}},
        "train": {"output_dir": str(tmp_path / "run"), "max_seq_len": 256, "eval_steps": None,
                  "save_steps": 1000},
    })  # fmt: skip
    result = train_model(recipe)
    # Three short examples pack into one row: batch 1, 40 passes, 40 steps.
    assert (result.batch_size, result.epochs, result.global_step) == (1, 40, 40)
    lineage = json.loads((result.run_dir / "lineage.json").read_text())
    assert lineage["sizing"]["rows"] == 1
    assert lineage["sizing"]["examples"] == 3
    assert lineage["hyperparameters"]["epochs"] == "auto"
