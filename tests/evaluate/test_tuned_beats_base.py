"""The default model fine-tuned on the bundled sample beats its base on held-out questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.evaluate.stage import evaluate_model
from astra_tune.recipe import EvalConfig
from astra_tune.train.run import TrainResult

pytestmark = pytest.mark.slow


def test_tuned_beats_base_with_confidence(
    tmp_path: Path, default_model_dir: Path, orrery_run: TrainResult
) -> None:
    test = orrery_run.run_dir / "prepared" / "test.jsonl"
    config = EvalConfig(metrics=["rougeL", "bleu", "f1", "perplexity"], max_new_tokens=48,
                        batch_size=16)  # fmt: skip
    result = evaluate_model(
        str(orrery_run.run_dir), test, config, against=str(default_model_dir), out_dir=tmp_path
    )
    figures = {
        c.metric: {"tuned": c.model.value, "base": c.against.value, "diff": c.difference.to_json()}
        for c in result.comparisons
    }
    print(json.dumps(figures, indent=1))
    assert len(result.records) == 76
    rouge = next(c for c in result.comparisons if c.metric == "rougeL")
    assert rouge.difference.low > 0, rouge
    assert rouge.wins > rouge.losses
    perplexity = next(c for c in result.comparisons if c.metric == "perplexity")
    assert perplexity.difference.high < 0, perplexity  # lower is better, and surely lower
    assert (tmp_path / "report.html").is_file()
