"""Run the data stage on test fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from astra_tune.data.prepare import prepare_data
from astra_tune.recipe import DataConfig

FIXTURES = Path(__file__).parent / "fixtures"


def data_config(sources: list[Any], **overrides: Any) -> DataConfig:
    """A DataConfig with no val/test split unless asked (so every record lands in train)."""
    values: dict[str, Any] = {"sources": sources, "split": {"val": 0.0, "test": 0.0}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return DataConfig.model_validate(values)


def run_prepare(
    out: Path, model: Path, sources: list[Any], **overrides: Any
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """prepare_data into `out`; returns the written splits and the report."""
    prepare_data(data_config(sources, **overrides), out, base_model=str(model), seed=0)
    splits = {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "val", "test")
    }
    return splits, json.loads((out / "report.json").read_text())


def messages_of(records: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    return [r["messages"] for r in records]
