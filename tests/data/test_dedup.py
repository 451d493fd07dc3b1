from __future__ import annotations

import json
from pathlib import Path

from astra_tune.data.dedup import exact_duplicates, exact_key, shingles
from astra_tune.data.synthetic import planted_records
from tests.data.helpers import run_prepare


def test_exact_key_folds_case_and_whitespace_only() -> None:
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("Hello, World") != exact_key("Hello World")


def test_exact_duplicates_keep_the_first() -> None:
    clusters = exact_duplicates(["a b", "c", "A  B", "c ", "d"])
    assert clusters.members == {0: [2], 1: [3]}


def test_short_texts_make_one_shingle() -> None:
    assert shingles("Yes, sure.", 3) == {b"yes sure"}
    assert len(shingles("one two three four five", 3)) == 3


def test_planted_duplicates_are_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    planted = planted_records(2000, seed=3)
    source = tmp_path / "planted.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in planted.records))
    splits, report = run_prepare(tmp_path / "out", tiny_model_dir, [str(source)])

    def index(location: str) -> int:
        return int(location.rsplit(":", 1)[1]) - 1

    found = {"exact": {}, "near": {}}
    for cluster in report["duplicates"]["clusters"]:
        for dropped in cluster["dropped"]:
            found[cluster["kind"]][index(dropped)] = index(cluster["kept"])
    # Exact pass: every planted exact copy, tied to its original, nothing else.
    assert found["exact"] == planted.exact
    # Near pass: recall and precision against the planted truth.
    hits = sum(1 for copy, original in found["near"].items() if planted.near.get(copy) == original)
    recall = hits / len(planted.near)
    precision = hits / len(found["near"])
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision
    assert len(splits["train"]) == 2000 - len(found["exact"]) - len(found["near"])
