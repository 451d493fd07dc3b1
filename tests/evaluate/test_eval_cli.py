"""`astra eval` end to end on tiny models, and evaluation after training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.evaluate.stage import evaluate_model
from astra_tune.recipe import EvalConfig, validate_recipe
from tests.cli_runner import run_astra

SAMPLE = Path(__file__).parents[2] / "src/astra_tune/data/samples/orrery/test.jsonl"


def test_eval_writes_scores_samples_and_report(
    tmp_path: Path, tiny_model_dir: Path, tiny_gguf_file: Path
) -> None:
    data = tmp_path / "test.jsonl"
    data.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:5]))
    out = tmp_path / "out"
    result = run_astra("eval", str(tiny_model_dir), "--data", str(data), "--against",
                       str(tiny_gguf_file), "-o", str(out), "--max-new-tokens", "6")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert scores["examples"] == 5
    assert set(scores["comparison"]) == {"facts", "perplexity", "rouge1", "rouge2", "rougeL",
                                         "bleu", "chrf", "exact_match", "f1"}  # fmt: skip
    for metric in scores["comparison"].values():
        assert metric["wins"] + metric["ties"] + metric["losses"] == 5
        difference = metric["difference"]
        assert difference["low"] <= difference["value"] <= difference["high"]
    # The same weights in fp32 and f16: perplexities close, not identical.
    ppl = scores["comparison"]["perplexity"]
    assert ppl["model"]["value"] == pytest.approx(ppl["against"]["value"], rel=0.01)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["index"] for s in samples] == [0, 1, 2, 3, 4]
    assert samples[0]["reference"] == "The Orrery Orbit Two runs for 3 hours on a full charge."
    assert isinstance(samples[0]["answer"], str)
    assert set(samples[0]["scores"]) == set(scores["comparison"])
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report
    assert "Examples that changed most" in report

    sheet = run_astra("eval", "sheet", str(out))
    assert sheet.exit_code == 0, sheet.stderr
    assert len((out / "ratings.csv").read_text().splitlines()) >= 11  # header + 10 answers


def test_bad_data_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "bad.jsonl"
    good = SAMPLE.read_text().splitlines()[0]
    two_users = [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]
    data.write_text(good + "\n" + json.dumps({"messages": two_users}))
    result = run_astra("eval", str(tiny_model_dir), "--data", str(data))
    assert result.exit_code == 2
    assert "the last message must be the assistant's reference answer" in result.stderr
    assert f"{data}:2" in result.stderr
    assert "Traceback" not in result.stderr


def test_training_can_evaluate_on_the_test_split(tmp_path: Path, tiny_model_dir: Path) -> None:
    from astra_tune.train.run import train_model

    recipe = validate_recipe({
        "name": "tiny-eval",
        "base_model": str(tiny_model_dir),
        "data": {"sources": ["builtin:orrery"], "split": {"val": 0.0, "test": 0.03}},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "batch_size": 2,
                  "max_seq_len": 192, "eval_steps": None, "save_steps": 2,
                  "lora": {"r": 4, "alpha": 8}},
        "eval": {"after_training": True, "max_new_tokens": 4, "bootstrap": 200,
                 "metrics": ["rougeL", "perplexity"]},
    })  # fmt: skip
    result = train_model(recipe)
    lineage = json.loads((result.run_dir / "lineage.json").read_text())
    recorded = lineage["eval"]
    assert recorded["examples"] >= 5
    assert set(recorded["comparison"]) == {"rougeL", "perplexity"}
    assert recorded["scores"]["perplexity"]["value"] > 1.0
    assert (result.run_dir / "eval" / "report.html").is_file()
    # `astra eval RUN` then finds the base and the test split by itself.
    test = result.run_dir / "prepared" / "test.jsonl"
    config = EvalConfig(metrics=["perplexity"])
    again = evaluate_model(str(result.run_dir), test, config, out_dir=tmp_path / "again")
    assert again.model.intervals["perplexity"].value == pytest.approx(
        recorded["scores"]["perplexity"]["value"], rel=1e-4
    )
