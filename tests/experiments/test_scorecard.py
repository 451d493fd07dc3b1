"""Scorecards: conservative decisions, the sample-ratio test, order-free pairwise ratings."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from astra_tune.experiments.assignment import Unit
from astra_tune.experiments.records import Trace
from astra_tune.experiments.scorecard import scorecard
from astra_tune.experiments.stats import bradley_terry_intervals, rate_sequence
from astra_tune.experiments.store import ExperimentStore, parse_spec
from astra_tune.experiments.tables import FeedbackRow, ResponseRow, VoteRow
from astra_tune.registry.index import session
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra


@pytest.fixture
def store(two_versions: Registry) -> ExperimentStore:
    store = ExperimentStore(two_versions)
    store.create(parse_spec({
        "name": "ab", "model": "orrery",
        "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}, "split": [50, 50],
        "min_samples": 50,
    }))  # fmt: skip
    return store


def _traffic(store: ExperimentStore, users: dict[str, int], up_rate: dict[str, float],
             seed: int = 0) -> list[str]:  # fmt: skip
    """`users[arm]` users each asking once and rating: thumbs up with `up_rate[arm]`."""
    rng = random.Random(seed)
    ids = []
    with session(store.engine) as db, db.begin():
        for arm, count in users.items():
            version = {"control": "1.0.0", "candidate": "1.0.1"}[arm]
            for i in range(count):
                unit = Unit(f"{arm}-{i}", "user")
                trace = Trace(id=Trace.new_id("resp"), api="openai", requested="orrery",
                              served=f"orrery:{version}", version=version, unit=unit,
                              experiment="ab", arm=arm)  # fmt: skip
                db.add(ResponseRow(**trace.row(answer="ok")))
                db.flush()  # the response before its rating (a foreign key, no relationship)
                now = datetime.now(UTC)
                db.add(FeedbackRow(response_id=trace.id, rating=1 if rng.random() < up_rate[arm]
                                   else -1, created_at=now, updated_at=now, tags=[]))  # fmt: skip
                ids.append(trace.id)
    return ids


def test_too_few_ratings_is_keep_collecting_even_with_a_big_gap(store: ExperimentStore) -> None:
    _traffic(store, {"control": 20, "candidate": 20}, {"control": 0.1, "candidate": 0.9})
    card = scorecard(store.engine, store.get("ab"))
    assert card.decision == "keep collecting"
    assert [a.ratings for a in card.arms] == [20, 20]


def test_a_real_difference_names_the_winner_and_no_difference_does_not(
    store: ExperimentStore,
) -> None:
    _traffic(store, {"control": 300, "candidate": 300}, {"control": 0.4, "candidate": 0.8})
    card = scorecard(store.engine, store.get("ab"))
    assert card.decision == "winner: candidate", card.reason
    assert card.comparisons[0].interval.low > 0
    assert card.srm_p is not None
    assert card.srm_p > 0.001
    control, candidate = card.arms
    assert control.rate_interval.low <= control.rate <= control.rate_interval.high  # type: ignore[operator]
    assert candidate.requests == 300
    assert candidate.version == "1.0.1"


def test_even_arms_are_no_difference(two_versions: Registry) -> None:
    store = ExperimentStore(two_versions)
    store.create(parse_spec({"name": "ab", "model": "orrery", "min_samples": 50,
                             "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"},
                             "split": [50, 50]}))  # fmt: skip
    _traffic(store, {"control": 200, "candidate": 200}, {"control": 0.6, "candidate": 0.6})
    assert scorecard(store.engine, store.get("ab")).decision == "no difference yet"


def test_a_skewed_split_marks_the_experiment_invalid(store: ExperimentStore) -> None:
    _traffic(store, {"control": 400, "candidate": 250}, {"control": 0.4, "candidate": 0.9})
    card = scorecard(store.engine, store.get("ab"))
    assert card.srm_p is not None
    assert card.srm_p < 0.001
    assert card.decision == "invalid"  # however good the candidate looks


def test_pairwise_ratings_do_not_depend_on_vote_order(store: ExperimentStore) -> None:
    ids = _traffic(store, {"control": 60, "candidate": 60}, {"control": 0.5, "candidate": 0.5})
    control, candidate = ids[:60], ids[60:]
    rng = random.Random(1)
    votes = [(c, k, rng.choice(["b", "b", "a", "tie", "both_bad"]))
             for c, k in zip(control, candidate, strict=True)]  # fmt: skip
    with session(store.engine) as db, db.begin():
        db.add_all(VoteRow(first=first, second=second, winner=winner, at=datetime.now(UTC))
                   for first, second, winner in votes)  # fmt: skip
    card = scorecard(store.engine, store.get("ab"))
    assert card.votes == 60
    by_arm = {a.arm: a for a in card.arms}
    assert by_arm["candidate"].strength > by_arm["control"].strength  # type: ignore[operator]
    arms = [("control", "candidate", w) for _, _, w in votes]
    shuffled = arms[:]
    random.Random(7).shuffle(shuffled)
    assert bradley_terry_intervals(["control", "candidate"], arms) == bradley_terry_intervals(
        ["control", "candidate"], shuffled
    )


def test_rate_sequence_holds_at_every_look() -> None:
    """Peeking after every rating: a 0.5 rate leaves the interval in under 5% of runs."""
    rng = random.Random(0)
    escaped = 0
    for _ in range(200):
        ups = 0
        for n in range(1, 301):
            ups += rng.random() < 0.5
            interval = rate_sequence(ups, n)
            if not interval.low <= 0.5 <= interval.high:
                escaped += 1
                break
    assert escaped / 200 < 0.05


def test_status_writes_an_html_report_with_the_rate_plot(
    tmp_path: Path, store: ExperimentStore
) -> None:
    _traffic(store, {"control": 300, "candidate": 300}, {"control": 0.4, "candidate": 0.8})
    page = tmp_path / "report.html"
    shown = run_astra("experiment", "status", "ab", "--html", str(page),
                      env={"ASTRA_HOME": str(tmp_path / "home")})  # fmt: skip
    assert shown.exit_code == 0, shown.stderr
    assert "decision: winner: candidate" in shown.stdout
    html = page.read_text()
    assert "decision: winner: candidate" in html
    assert html.count("<tr>") == 3  # header + two arms
    assert "data:image/png;base64," in html
    as_json = run_astra("experiment", "status", "ab", "--json",
                        env={"ASTRA_HOME": str(tmp_path / "home")})  # fmt: skip
    card = json.loads(as_json.stdout)
    assert [a["requests"] for a in card["arms"]] == [300, 300]
