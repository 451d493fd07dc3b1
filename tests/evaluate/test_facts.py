"""Key-fact recall: the value an answer states, not its wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.evaluate.facts import check_answer, common_terms, key_facts
from astra_tune.evaluate.metrics import facts_column, overlap_columns

QUESTION = "On a full charge, how many hours can the Vex run?"
REFERENCE = "The Orrery Vex runs for 3 hours on a full charge."


def test_key_facts_are_numbers_names_and_quotes_the_question_does_not_give() -> None:
    assert key_facts(REFERENCE, QUESTION) == ("3", "orrery")  # "Vex" is in the question
    assert key_facts('Run `astra serve` on port 8,000, then say "hello there".') == (
        '"astra serve"', '"hello there"', "8000"
    )  # fmt: skip
    assert key_facts("Set max_seq_len in the config and plug in the USB-C cable.") == (
        "usb-c", "max_seq_len"
    )  # fmt: skip
    # A capital at a sentence start is not a name; one mid-sentence is.
    assert key_facts("Yes. Hold it for 12 seconds in Austin.") == ("12", "austin")


def test_a_fluent_wrong_value_scores_zero_where_rouge_would_not() -> None:
    wrong = check_answer("The Orrery Vex runs for 12 hours on a full charge.", REFERENCE, QUESTION)
    assert wrong.found == ("orrery",)
    assert wrong.recall == 50.0
    terse = check_answer("Three hours.", REFERENCE, QUESTION)
    assert terse.found == ("3",)  # spelled-out numbers count
    assert check_answer("Anything.", "Yes, it does.", "Does it?").recall is None


def test_terms_most_references_share_are_style_not_facts() -> None:
    references = [f"The Orrery Model{i} weighs {i}.5 kg." for i in range(12)]
    questions = [f"How heavy is the Model{i}?" for i in range(12)]
    assert common_terms(references, questions) == {"orrery"}
    column = facts_column(["The Orrery thing weighs 3.5 kg."] * 12, references, questions)
    # Only example 3 is right; the brand every reference carries earns nothing.
    assert column.per_example()[3] == 100.0
    assert column.score() == pytest.approx(100.0 / 12)


def test_examples_without_key_facts_carry_no_weight() -> None:
    column = facts_column(["3 hours", "sure"], [REFERENCE, "Yes, it does."], [QUESTION, "Ok?"])
    assert column.stats.tolist() == [[50.0, 1.0], [0.0, 0.0]]  # "orrery" missing, then none
    assert column.score() == 50.0
    (only,) = overlap_columns(["facts"], ["3 hours"], [REFERENCE], [QUESTION])
    assert only.name == "facts"


def test_eval_reports_facts_first_with_intervals(tmp_path: Path, tiny_gguf_file: Path) -> None:
    from tests.cli_runner import run_astra

    sample = Path(__file__).parents[2] / "src/astra_tune/data/samples/orrery/test.jsonl"
    data = tmp_path / "test.jsonl"
    data.write_text("".join(sample.read_text().splitlines(keepends=True)[:4]))
    out = tmp_path / "out"
    result = run_astra("eval", str(tiny_gguf_file), "--data", str(data), "-o", str(out),
                       "--max-new-tokens", "4")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    scores = json.loads((out / "scores.json").read_text())
    assert next(iter(scores["model"]["scores"])) == "facts"  # the default list starts with it
    facts = scores["model"]["scores"]["facts"]
    assert 0.0 <= facts["low"] <= facts["value"] <= facts["high"] <= 100.0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    answers = [s["answer"] for s in samples]
    references = [s["reference"] for s in samples]
    records = [json.loads(line) for line in data.read_text().splitlines()]
    questions = [r["messages"][-2]["content"] for r in records]
    expected = facts_column(answers, references, questions).score()
    assert facts["value"] == pytest.approx(expected)
