from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from astra_tune.data.split import contaminated, stratified_split
from tests.data.helpers import run_prepare


def test_split_sizes_and_strata() -> None:
    groups = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    plan = stratified_split(groups, val=0.1, test=0.2, seed=0)
    assert (len(plan.train), len(plan.val), len(plan.test)) == (700, 100, 200)
    assert sorted(plan.train + plan.val + plan.test) == list(range(1000))
    for part, size in ((plan.val, 100), (plan.test, 200)):
        shares = Counter(groups[i] for i in part)
        for group, total in (("a", 600), ("b", 300), ("c", 100)):
            assert shares[group] == pytest.approx(size * total / 1000, abs=1)


def test_split_is_deterministic_by_seed() -> None:
    groups = ["x"] * 50
    assert stratified_split(groups, val=0.2, test=0.2, seed=1) == stratified_split(
        groups, val=0.2, test=0.2, seed=1
    )
    assert stratified_split(groups, val=0.2, test=0.2, seed=1) != stratified_split(
        groups, val=0.2, test=0.2, seed=2
    )


def test_contamination_finds_reworded_copies_only() -> None:
    train = [
        "How do I reset the Orbit Two vacuum robot to its factory settings?",
        "What is the weight of the Tamsin pool cleaner?",
    ]
    held_out = [
        "how do I reset the Orbit Two vacuum robot to its factory settings",  # same words
        "Which city designed the Tamsin?",  # a genuine paraphrase: not contamination
    ]
    hits = contaminated(train, held_out, threshold=0.8, num_perm=128, shingle_words=3)
    assert [(h, t) for h, t, _ in hits] == [(0, 0)]


def test_prepare_removes_contaminated_test_records(tmp_path: Path, tiny_model_dir: Path) -> None:
    def row(q: str, a: str) -> str:
        return json.dumps({"instruction": q, "output": a}) + "\n"

    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(row(f"Question number {i} about topic {i * 7}?", f"Answer {i}.") for i in range(40))
    )
    test = tmp_path / "test.jsonl"
    test.write_text(row("Question number 3 about topic 21?", "A different answer.")
                    + row("Something else entirely, never seen in training?", "Yes."))  # fmt: skip
    splits, report = run_prepare(
        tmp_path / "out",
        tiny_model_dir,
        [str(train), {"path": str(test), "assign_to": "test"}],
        split={"val": 0.1, "test": 0.1},
    )
    assert [r["messages"][0]["content"] for r in splits["test"]] == [
        "Something else entirely, never seen in training?"
    ]
    assert report["contamination"]["removed"] == 1
    assert report["contamination"]["examples"][0]["held_out"].endswith("test.jsonl:1")
    # The pinned test file replaces the test share; val still takes 10% of the rest.
    assert len(splits["val"]) == 4
    assert len(splits["train"]) == 36


def test_stratifies_by_category_when_present(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [
        {"instruction": f"Item {i} of group {g}?", "response": f"Value {i}{g}.", "category": g}
        for g, n in (("big", 80), ("small", 20))
        for i in range(n)
    ]
    source = tmp_path / "dolly.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits, report = run_prepare(
        tmp_path / "out", tiny_model_dir, [str(source)], split={"val": 0.1, "test": 0.1}
    )
    assert report["split"]["stratify"] == "category"
    assert Counter(r["category"] for r in splits["test"]) == {"big": 8, "small": 2}


def test_a_repeated_source_is_upsampled_in_train_only(tmp_path: Path, tiny_model_dir: Path) -> None:
    def row(q: str, a: str) -> str:
        return json.dumps({"instruction": q, "output": a}) + "\n"

    faq = tmp_path / "faq.jsonl"
    faq.write_text("".join(row(f"Question {i} on {i * 7}?", f"Answer {i}.") for i in range(20)))
    pages = tmp_path / "pages.jsonl"
    pages.write_text("".join(json.dumps({"text": f"Page {i}: fact {i * 11}."}) + "\n"
                             for i in range(10)))  # fmt: skip
    splits, report = run_prepare(
        tmp_path / "out",
        tiny_model_dir,
        [str(faq), {"path": str(pages), "repeat": 3}],
        split={"val": 0.2, "test": 0.0},
    )
    texts = Counter(r["text"] for r in splits["train"] if "text" in r)
    held_texts = [r for r in splits["val"] if "text" in r]
    # Every training page three times; validation pages once (the split comes first).
    assert set(texts.values()) == {3}
    assert len(texts) + len(held_texts) == 10
    assert report["repeated"] == 2 * len(texts)
    assert report["split"]["counts"]["train"] == len(splits["train"])
    questions = Counter(r["messages"][0]["content"] for r in splits["train"] if "messages" in r)
    assert set(questions.values()) == {1}  # the other source is not repeated
