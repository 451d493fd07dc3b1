"""Export: Open WebUI feedback records with arm and version, and DPO-ready preference pairs."""

from __future__ import annotations

import json
from pathlib import Path

from astra_tune.data.formats import detect_format, normalize
from astra_tune.experiments.assignment import Unit
from astra_tune.experiments.export import export_feedback
from astra_tune.experiments.feedback import FeedbackStore
from astra_tune.experiments.records import Trace
from astra_tune.experiments.store import ExperimentStore, parse_spec
from astra_tune.experiments.tables import ResponseRow
from astra_tune.registry.index import session
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra

QUESTION = [{"role": "user", "content": "How long is the Wren covered?"}]


def _answer(store: ExperimentStore, arm: str, text: str, messages: list[dict[str, str]]) -> str:
    version = {"control": "1.0.0", "candidate": "1.0.1"}[arm]
    trace = Trace(id=Trace.new_id("resp"), api="openai", requested="orrery",
                  served=f"orrery:{version}", version=version, unit=Unit("u1", "user"),
                  experiment="ab", arm=arm, messages=messages)  # fmt: skip
    with session(store.engine) as db, db.begin():
        db.add(ResponseRow(**trace.row(answer=text)))
    return trace.id


def test_export_writes_both_files(tmp_path: Path, two_versions: Registry) -> None:
    store = ExperimentStore(two_versions)
    arms = {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}
    store.create(parse_spec({"name": "ab", "model": "orrery", "split": [50, 50], "arms": arms}))
    good = _answer(store, "candidate", "Twelve years.", QUESTION)
    poor = _answer(store, "control", "It is covered.", QUESTION)
    elsewhere = _answer(store, "control", "Blue.", [{"role": "user", "content": "Colour?"}])
    feedback = FeedbackStore(store.engine)
    feedback.rate(good, 1, reason="accurate", tags=["warranty"])
    feedback.rate(poor, -1, comment="no number")
    feedback.vote(poor, good, "b")
    feedback.vote(poor, elsewhere, "a")  # two different conversations: no preference pair
    feedback.vote(good, poor, "tie")

    done = export_feedback(store.engine, store.get("ab"), tmp_path / "out")
    assert (done.ratings, done.votes, done.pairs, done.skipped_pairs) == (2, 3, 1, 2)
    records = [json.loads(line) for line in done.feedback.read_text().splitlines()]
    assert len(records) == 5
    first = records[0]
    assert first["type"] == "rating"
    assert first["data"]["rating"] == 1
    assert first["data"]["reason"] == "accurate"
    assert first["meta"]["tags"] == ["warranty"]
    assert first["astra"] == {"experiment": "ab", "arm": "candidate", "version": "1.0.1",
                              "response_id": good, "served": "orrery:1.0.1"}  # fmt: skip
    assert first["snapshot"]["chat"]["messages"][-1] == {"role": "assistant",
                                                         "content": "Twelve years."}  # fmt: skip
    assert isinstance(first["created_at"], int)
    arena = records[2]
    assert arena["meta"]["arena"] is True
    assert arena["data"]["model_id"] == "orrery:1.0.1"  # the winner
    assert arena["data"]["sibling_model_ids"] == ["orrery:1.0.0"]

    pairs = [json.loads(line) for line in done.preferences.read_text().splitlines()]
    assert pairs == [{"prompt": QUESTION, "chosen": "Twelve years.", "rejected": "It is covered."}]
    # `astra data prepare` reads them as preference records.
    assert detect_format(set(pairs[0])) == "preference"
    record = normalize(pairs[0], "preference")
    assert record["chosen"] == "Twelve years."

    cli = run_astra("experiment", "export", "ab", "-o", str(tmp_path / "cli"),
                    env={"ASTRA_HOME": str(tmp_path / "home")})  # fmt: skip
    assert cli.exit_code == 0, cli.stderr
    assert "1 preference pairs" in cli.stdout
    assert (tmp_path / "cli" / "feedback.jsonl").read_text() == done.feedback.read_text()
