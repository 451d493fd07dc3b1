from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_astra
from tests.data.helpers import FIXTURES


def test_prepare_writes_splits_and_report(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    result = run_astra(
        "data", "prepare", str(FIXTURES / "alpaca.jsonl"), str(FIXTURES / "dolly.jsonl"),
        "-o", str(out), "--model", str(tiny_model_dir), "--val", "0", "--test", "0",
        "--system-prompt", "You are helpful.",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html", "report.json", "test.jsonl", "train.jsonl", "val.jsonl"
    ]  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    # alpaca and dolly hold the same three examples: the dolly copies are exact duplicates.
    assert report["split"]["counts"] == {"train": 3, "val": 0, "test": 0}
    assert report["duplicates"]["exact"] == 3
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "You are helpful."}
    assert "exact duplicate" in result.stdout
    assert "<img" in (out / "report.html").read_text()


def test_prepare_with_recipe_and_mapping(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    source = tmp_path / "sub" / "qa.csv"
    source.write_text("question,answer\nIs it red?,Yes it is.\nIs it big?,No.\n")
    # A file of the same name in the working directory: the recipe's path means its own.
    (tmp_path / "qa.csv").write_text("question,answer\nWrong file?,Yes.\n")
    recipe = tmp_path / "sub" / "run.yaml"
    recipe.write_text(
        f"name: demo\nbase_model: {tiny_model_dir}\ndata:\n  sources: [qa.csv]\n"
        "  mapping: {prompt: question, completion: answer}\n  split: {val: 0, test: 0}\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = run_astra("data", "prepare", "-o", str(out), "--recipe", "sub/run.yaml")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [r["messages"][1]["content"] for r in rows] == ["Yes it is.", "No."]


def test_prepare_errors_are_one_clear_message(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"text": "fine"}\n{"text": \n')
    result = run_astra(
        "data", "prepare", str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir)
    )
    assert result.exit_code == 2
    assert f"{source}:2" in result.stderr
    assert "malformed JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    bad_map = run_astra(
        "data", "prepare", str(source), "-o", str(tmp_path / "o"), "--map", "instruction"
    )
    assert bad_map.exit_code == 2
    assert "--map 'instruction' is not canonical=column" in bad_map.stderr
    bad_split = run_astra(
        "data", "prepare", str(source), "-o", str(tmp_path / "o"), "--val", "0.6", "--test", "0.5"
    )
    assert bad_split.exit_code == 2
    assert "split.val + split.test must leave records for training" in bad_split.stderr
    bad_format = run_astra(
        "data", "prepare", str(source), "-o", str(tmp_path / "o"), "--format", "bogus"
    )
    assert bad_format.exit_code == 2
    assert "unknown --format 'bogus'" in bad_format.stderr
    assert "not a valid recipe" not in bad_format.stderr  # no recipe was given


def test_inspect_shows_summary_and_rendered_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    prepared = run_astra("data", "prepare", str(FIXTURES / "openai.jsonl"), "-o", str(out),
                         "--model", str(tiny_model_dir), "--val", "0", "--test", "0")  # fmt: skip
    assert prepared.exit_code == 0, prepared.stderr
    result = run_astra("data", "inspect", str(out), "-n", "1")
    assert result.exit_code == 0, result.stderr
    assert "│ train │       3 │ chat 3 │" in result.stdout
    assert "<|im_start|>assistant" in result.stdout
    assert "Water boils at 100 °C (212 °F) at sea level.<|im_end|>" in result.stdout
    assert "tokens trained" in result.stdout
    raw = run_astra(
        "data", "inspect", str(FIXTURES / "alpaca.jsonl"), "--model", str(tiny_model_dir)
    )
    assert raw.exit_code == 2
    assert "not a canonical record" in raw.stderr
