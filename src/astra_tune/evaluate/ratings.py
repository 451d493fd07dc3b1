"""Human ratings: a blind sheet to fill in, and the mean rating per model read back.

The sheet lists each prompt with every model's answer in shuffled order and no model
names; which answer came from which model is kept in a key file beside it, so raters
cannot favour a model they recognise.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astra_tune.atomic import write_text
from astra_tune.errors import DataError
from astra_tune.evaluate.compare import Interval, mean_interval

COLUMNS = ("item", "prompt", "reference", "answer", "rating")


def key_path(sheet: Path) -> Path:
    return sheet.with_name(sheet.stem + ".key.json")


def write_sheet(eval_dir: Path, sheet: Path, seed: int = 0) -> int:
    """A rating sheet from an evaluation's samples.jsonl; returns the number of rows."""
    samples_path = eval_dir / "samples.jsonl"
    scores_path = eval_dir / "scores.json"
    if not samples_path.is_file() or not scores_path.is_file():
        raise DataError(
            f"{eval_dir} is not an evaluation directory (no samples.jsonl/scores.json)",
            where=str(eval_dir),
            fix="run `astra eval MODEL --data FILE -o DIR` first",
        )
    scores = json.loads(scores_path.read_text(encoding="utf-8"))
    models = {"model": scores["model"]["spec"]}
    if "against" in scores:
        models["against_answer"] = scores["against"]["spec"]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for line in samples_path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        answers = [("model", sample.get("answer"))]
        if "against_answer" in models:
            answers.append(("against_answer", sample.get("against_answer")))
        rng.shuffle(answers)
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in sample["prompt"])
        for key, answer in answers:
            if answer is None:
                raise DataError(
                    "the evaluation has no generated answers (only likelihood metrics)",
                    where=str(samples_path),
                )
            rows.append(
                {"item": sample["index"], "prompt": prompt, "reference": sample["reference"],
                 "answer": answer, "model": key}
            )  # fmt: skip
    order = list(range(len(rows)))
    rng.shuffle(order)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    key: dict[str, str] = {}
    for row_number, index in enumerate(order, start=1):
        row = rows[index]
        writer.writerow([row["item"], row["prompt"], row["reference"], row["answer"], ""])
        key[str(row_number)] = models[row["model"]]
    write_text(sheet, buffer.getvalue())
    write_text(key_path(sheet), json.dumps({"rows": key, "scale": "1-5"}, indent=2) + "\n")
    return len(rows)


@dataclass(frozen=True)
class ModelRating:
    """A model's mean human rating with a 95% bootstrap interval."""

    model: str
    count: int
    mean: Interval


def read_ratings(sheet: Path) -> list[ModelRating]:
    """Mean rating per model from a filled-in sheet and its key (errors: file:line)."""
    key_file = key_path(sheet)
    if not sheet.is_file():
        raise DataError(f"{sheet}: no such file", where=str(sheet))
    if not key_file.is_file():
        raise DataError(
            f"the key for {sheet.name} is missing ({key_file.name})",
            where=str(key_file),
            fix="keep the .key.json written with the sheet next to it",
        )
    key = json.loads(key_file.read_text(encoding="utf-8"))["rows"]
    by_model: dict[str, list[float]] = {}
    with sheet.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "rating" not in reader.fieldnames:
            raise DataError(f"{sheet.name} has no 'rating' column", where=f"{sheet}:1")
        for number, row in enumerate(reader, start=1):
            # The CSV line of a row is not its file line when answers span lines.
            where = f"{sheet}: row {number}"
            raw = (row.get("rating") or "").strip()
            if not raw:
                continue  # not rated yet
            try:
                rating = float(raw)
            except ValueError:
                raise DataError(f"rating {raw!r} is not a number", where=where,
                                fix="rate 1 to 5, or leave the cell empty") from None  # fmt: skip
            if not 1 <= rating <= 5:
                raise DataError(f"rating {raw} is outside 1-5", where=where)
            model = key.get(str(number))
            if model is None:
                raise DataError(f"row {number} is not in the key", where=where,
                                fix="do not add, remove or reorder rows") from None  # fmt: skip
            by_model.setdefault(model, []).append(rating)
    if not by_model:
        raise DataError(f"{sheet.name} has no ratings yet", where=str(sheet))
    return [ModelRating(m, len(v), mean_interval(np.array(v))) for m, v in by_model.items()]
