"""Canary rollouts: steps advance only on enough healthy candidate traffic, fail into rollback."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.experiments.assignment import Unit
from astra_tune.experiments.records import Recorder, Trace
from astra_tune.experiments.rollout import Rollout, RolloutSpec, RolloutStore
from astra_tune.experiments.store import ExperimentError, ExperimentStore, parse_spec
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra


@pytest.fixture
def store(two_versions: Registry) -> RolloutStore:
    return RolloutStore(two_versions)


def start(store: RolloutStore, **changes: object) -> Rollout:
    values: dict[str, object] = {
        "model": "orrery:production",
        "to": "orrery:1.0.1",
        "steps": [10, 50, 100],
        "interval_s": 60,
        "min_requests": 5,
    }
    return store.start(RolloutSpec.model_validate({**values, **changes}))


def answers(
    store: RolloutStore, rollout: Rollout, arm: str, n: int, *, at: datetime,
    error: str | None = None, latency: float = 0.5,
) -> None:  # fmt: skip
    """`n` answers from one side of `rollout`, as the gateway records them."""
    recorder = Recorder(store.engine, batch_seconds=0.01)
    reference = rollout.reference(arm)
    for i in range(n):
        trace = Trace(
            id=Trace.new_id("chatcmpl"),
            api="openai",
            requested=rollout.model,
            served=reference,
            version=reference.split(":")[1],
            unit=Unit(f"{arm}-{i}", "user"),
            experiment=rollout.name,
            arm=arm,
            at=at,
        )
        row = trace.row(answer="ok", error=error)
        recorder.submit({**row, "latency_s": latency, "ttft_s": latency / 5})
    recorder.flush()
    recorder.close()


def step_start(rollout: Rollout) -> datetime:
    return datetime.fromisoformat(rollout.step_started_at)


def test_no_traffic_holds_the_step_instead_of_passing_it(store: RolloutStore) -> None:
    rollout = start(store)
    assert (rollout.status, rollout.weight, rollout.weights()) == ("running", 10, {
        "stable": 90, "candidate": 10})  # fmt: skip
    begun = step_start(rollout)
    assert store.tick(begun + timedelta(seconds=30)) == []  # the interval is not over
    later = begun + timedelta(seconds=61)
    assert store.tick(later) == [rollout.name]
    held = store.get(rollout.name)
    assert (held.step, held.weight, held.failures, held.status) == (0, 10, 0, "running")
    assert held.history[-1]["event"] == "hold"
    assert held.history[-1]["reason"] == "0 candidate answers, 5 needed"
    # The next window starts at the hold: answers from before it do not count again.
    assert step_start(held) == later
    assert store.registry.resolve("orrery:production").version == "1.0.0"


def test_healthy_candidate_passes_every_step_and_takes_the_alias(store: RolloutStore) -> None:
    rollout = start(store)
    weights = []
    for _ in range(3):
        current = store.get(rollout.name)
        begun = step_start(current)
        answers(store, current, "candidate", 6, at=begun + timedelta(seconds=1))
        answers(store, current, "stable", 6, at=begun + timedelta(seconds=1))
        moment = begun + timedelta(seconds=61)
        assert store.tick(moment) == [rollout.name]
        # A second replica ticking at the same moment finds the step already taken.
        assert store.tick(moment) == []
        weights.append(store.get(rollout.name).weight)
    done = store.get(rollout.name)
    assert weights == [50, 100, 100]
    assert done.status == "done"
    assert [e["event"] for e in done.history] == ["start", "pass", "pass", "promoted"]
    assert done.history[1]["values"]["candidate_error_rate"] == 0
    assert done.history[1]["values"]["p95_latency_ratio"] == pytest.approx(1.0)
    assert store.registry.resolve("orrery:production").version == "1.0.1"
    moved = store.registry.history("orrery", "production")[-1]
    assert (moved["from"], moved["to"]) == ("1.0.0", "1.0.1")
    assert moved["reason"] == f"{rollout.name}: every step passed"
    assert store.list(active_only=True) == []


def test_failing_candidate_rolls_back_at_the_failure_limit(store: RolloutStore) -> None:
    rollout = start(store, failure_limit=2)
    marker = store.change_marker()
    for expected in ("running", "rolled_back"):
        current = store.get(rollout.name)
        begun = step_start(current)
        # 2 of 6 candidate answers fail: 33% > the 2% allowed.
        answers(store, current, "candidate", 4, at=begun + timedelta(seconds=1))
        answers(store, current, "candidate", 2, at=begun + timedelta(seconds=2), error="500")
        assert store.tick(begun + timedelta(seconds=61)) == [rollout.name]
        assert store.get(rollout.name).status == expected
    ended = store.get(rollout.name)
    assert (ended.weight, ended.failures, ended.weights()["stable"]) == (0, 2, 100)
    assert [e["event"] for e in ended.history] == ["start", "fail", "rolled back"]
    assert ended.history[-1]["reason"] == "candidate error rate 33.3% > 2.0%"
    assert store.change_marker() != marker  # servers see it and route all to stable
    assert store.registry.resolve("orrery:production").version == "1.0.0"
    assert store.list(active_only=True) == []


def test_slow_candidate_fails_on_latency_against_the_stable_side(store: RolloutStore) -> None:
    rollout = start(store, failure_limit=1, max_p95_latency_ratio=1.5)
    begun = step_start(rollout)
    answers(store, rollout, "candidate", 6, at=begun + timedelta(seconds=1), latency=2.0)
    answers(store, rollout, "stable", 6, at=begun + timedelta(seconds=1), latency=0.5)
    store.tick(begun + timedelta(seconds=61))
    ended = store.get(rollout.name)
    assert ended.status == "rolled_back"
    assert ended.history[-1]["reason"] == "p95_latency_ratio 4.00 > 1.5; ttft_ratio 4.00 > 1.5"


def test_a_recovered_step_resets_the_failure_count(store: RolloutStore) -> None:
    rollout = start(store, failure_limit=2)
    begun = step_start(rollout)
    answers(store, rollout, "candidate", 6, at=begun + timedelta(seconds=1), error="boom")
    store.tick(begun + timedelta(seconds=61))
    current = store.get(rollout.name)
    assert (current.failures, current.weight) == (1, 10)
    begun = step_start(current)
    answers(store, current, "candidate", 6, at=begun + timedelta(seconds=1))
    store.tick(begun + timedelta(seconds=61))
    current = store.get(rollout.name)
    assert (current.failures, current.weight, current.status) == (0, 50, "running")


def test_pause_stops_checks_abort_sends_everyone_back(store: RolloutStore) -> None:
    rollout = start(store)
    store.pause(rollout.name)
    assert store.tick(step_start(rollout) + timedelta(hours=1)) == []
    with pytest.raises(ExperimentError, match="is paused, not running"):
        store.pause(rollout.name)
    resumed = store.resume(rollout.name)
    assert step_start(resumed) > step_start(rollout)  # the step's window starts again
    aborted = store.abort(rollout.name, "saw bad answers")
    assert (aborted.status, aborted.weight) == ("aborted", 0)
    assert aborted.history[-1] == {"at": aborted.history[-1]["at"], "event": "aborted",
                                   "reason": "saw bad answers"}  # fmt: skip
    with pytest.raises(ExperimentError, match="is aborted, not warming or running or paused"):
        store.abort(rollout.name)


def test_what_a_rollout_refuses(store: RolloutStore) -> None:
    with pytest.raises(ValueError, match="steps must rise and end at 100"):
        RolloutSpec(model="orrery:production", to="orrery:1.0.1", steps=[10, 50])
    with pytest.raises(ValueError, match="steps must rise and end at 100"):
        RolloutSpec(model="orrery:production", to="orrery:1.0.1", steps=[50, 10, 100])
    with pytest.raises(ConfigError, match=r"already points at 1\.0\.0"):
        start(store, to="orrery:1.0.0")
    with pytest.raises(ConfigError, match="is a version, not an alias"):
        start(store, model="orrery:1.0.0")
    rollout = start(store)
    with pytest.raises(ExperimentError, match=f"already in rollout {rollout.name}") as caught:
        start(store)
    assert caught.value.fix == f"end it first: astra rollout abort {rollout.name}"
    experiments = ExperimentStore(store.registry)
    with pytest.raises(ExperimentError, match=f"in rollout {rollout.name}"):
        experiments.create(parse_spec({
            "name": "wren-ab", "model": "orrery:production", "split": [50, 50],
            "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}}))  # fmt: skip


def test_cli_starts_shows_and_aborts(tmp_path: Path, two_versions: Registry) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    bad = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                    "--steps", "10,50", env=env)  # fmt: skip
    assert bad.exit_code == 2
    assert "--steps: steps must rise and end at 100" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                    "--interval", "soon", env=env)  # fmt: skip
    assert bad.exit_code == 2
    assert "--interval takes a duration like 60s" in bad.stderr
    started = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                        "--interval", "5m", env=env)  # fmt: skip
    assert started.exit_code == 0, started.stderr
    name = "rollout-orrery-production-1"
    assert (f"started: {name}: orrery:production orrery:1.0.0 -> orrery:1.0.1, 10% now, "
            "steps 10, 25, 50, 100 every 300 s") in started.stdout  # fmt: skip
    shown = run_astra("rollout", "status", name, env=env)
    assert "running, candidate 10% (step 1 of 4), failed checks 0/2" in shown.stdout
    aborted = run_astra("rollout", "abort", name, "-m", "not today", env=env)
    assert aborted.exit_code == 0, aborted.stderr
    assert "orrery:production serves orrery:1.0.0 only" in aborted.stdout
    again = run_astra("rollout", "abort", name, env=env)
    assert again.exit_code == 2
    assert "is aborted, not warming or running or paused" in again.stderr
    missing = run_astra("rollout", "status", "nope", env=env)
    assert missing.exit_code == 2
    assert f"known: {name}" in missing.stderr
