"""Blind rating sheets: written from an evaluation, read back per model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from astra_tune.errors import DataError
from astra_tune.evaluate.ratings import key_path, read_ratings, write_sheet


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "scores.json").write_text(json.dumps({"model": {"spec": "runs/tuned"},
                                                 "against": {"spec": "base-model"}}))  # fmt: skip
    samples = [
        {"index": i, "prompt": [{"role": "user", "content": f"question {i}"}],
         "reference": f"ref {i}", "answer": f"TUNED {i}", "against_answer": f"BASE {i}"}
        for i in range(6)
    ]  # fmt: skip
    (out / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return out


def rows(sheet: Path) -> list[dict[str, str]]:
    with sheet.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_sheet_hides_and_shuffles_models_and_ratings_come_back(
    eval_dir: Path, tmp_path: Path
) -> None:
    sheet = tmp_path / "sheet.csv"
    assert write_sheet(eval_dir, sheet) == 12
    table = rows(sheet)
    assert list(table[0]) == ["item", "prompt", "reference", "answer", "rating"]
    text = sheet.read_text()
    assert "runs/tuned" not in text
    assert "base-model" not in text
    first_is_tuned = [r["answer"].startswith("TUNED") for r in table]
    assert 0 < sum(first_is_tuned[::2]) < 6  # shuffled, not tuned-first every time
    # A rater who likes the tuned answers (5) more than the base ones (2); two left blank.
    for number, row in enumerate(table, start=1):
        row["rating"] = (
            "" if number in (1, 2) else ("5" if row["answer"].startswith("TUNED") else "2")
        )
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    ratings = {r.model: r for r in read_ratings(sheet)}
    assert set(ratings) == {"runs/tuned", "base-model"}
    assert ratings["runs/tuned"].mean.value == 5.0
    assert ratings["base-model"].mean.value == 2.0
    assert ratings["runs/tuned"].count + ratings["base-model"].count == 10


@pytest.mark.parametrize(("value", "message"), [("7", "outside 1-5"), ("good", "not a number")])
def test_bad_ratings_name_the_row(eval_dir: Path, tmp_path: Path, value: str, message: str) -> None:
    sheet = tmp_path / "sheet.csv"
    write_sheet(eval_dir, sheet)
    table = rows(sheet)
    table[2]["rating"] = value
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    with pytest.raises(DataError, match=message) as caught:
        read_ratings(sheet)
    assert caught.value.where == f"{sheet}: row 3"
    key_path(sheet).unlink()
    with pytest.raises(DataError, match="key"):
        read_ratings(sheet)
