"""Blue-green rollouts: no traffic before the smoke test, one switch, a guarded window after."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from astra_tune.experiments.rollout import Rollout, RolloutSpec, RolloutStore
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra
from tests.experiments.test_rollout import answers, step_start

SMOKE = {"answer": "Hello!", "finish_reason": "stop", "completion_tokens": 3, "seconds": 0.1}


@pytest.fixture
def store(two_versions: Registry) -> RolloutStore:
    return RolloutStore(two_versions)


def start(store: RolloutStore, **changes: object) -> Rollout:
    values: dict[str, object] = {
        "model": "orrery:production", "to": "orrery:1.0.1", "strategy": "blue-green",
        "interval_s": 60, "min_requests": 5, "failure_limit": 2, "scale_down_delay_s": 120,
    }  # fmt: skip
    return store.start(RolloutSpec.model_validate({**values, **changes}))


def alias(store: RolloutStore) -> str:
    return store.registry.resolve("orrery:production").version


def test_warming_gives_the_candidate_nothing_until_one_server_switches(
    store: RolloutStore,
) -> None:
    rollout = start(store)
    assert (rollout.status, rollout.weight, rollout.steps) == ("warming", 0, (100,))
    assert rollout.weights() == {"stable": 100, "candidate": 0}
    assert store.tick(step_start(rollout) + timedelta(hours=1)) == []  # no window yet
    assert rollout.keep_loaded_until() == math.inf
    assert store.switch(rollout.name, SMOKE) is True
    assert store.switch(rollout.name, SMOKE) is False  # a second server's switch is a no-op
    switched = store.get(rollout.name)
    assert (switched.status, switched.weight) == ("running", 100)
    assert switched.history[-1]["event"] == "switched"
    assert switched.history[-1]["values"] == SMOKE
    assert alias(store) == "1.0.1"  # at once, not after the window
    moved = store.registry.history("orrery", "production")[-1]
    assert moved["reason"] == f"{rollout.name}: blue-green switch"
    assert store.fail_smoke(rollout.name, "late", {}) is False  # too late to fail it


def test_a_clean_window_after_the_switch_ends_it_done(store: RolloutStore) -> None:
    rollout = start(store)
    store.switch(rollout.name, SMOKE)
    switched = store.get(rollout.name)
    begun = step_start(switched)
    # At 100% there is no stable traffic: only the error rate can be judged.
    answers(store, switched, "candidate", 6, at=begun + timedelta(seconds=1), latency=9.0)
    assert store.tick(begun + timedelta(seconds=61)) == [rollout.name]
    done = store.get(rollout.name)
    assert done.status == "done"
    assert [e["event"] for e in done.history] == ["start", "switched", "promoted"]
    assert alias(store) == "1.0.1"
    assert len(store.registry.history("orrery", "production")) == 2  # no second move
    # The old side stays loaded for the scale-down delay after the switch, then not.
    assert switched.switched_at is not None
    assert done.keep_loaded_until() == switched.switched_at.timestamp() + 120


def test_errors_after_the_switch_switch_back_at_the_failure_limit(store: RolloutStore) -> None:
    rollout = start(store)
    store.switch(rollout.name, SMOKE)
    for expected in ("running", "rolled_back"):
        current = store.get(rollout.name)
        begun = step_start(current)
        answers(store, current, "candidate", 3, at=begun + timedelta(seconds=1))
        answers(store, current, "candidate", 3, at=begun + timedelta(seconds=2), error="500")
        store.tick(begun + timedelta(seconds=61))
        assert store.get(rollout.name).status == expected
    ended = store.get(rollout.name)
    assert [e["event"] for e in ended.history] == ["start", "switched", "fail", "rolled back"]
    assert (ended.weight, ended.weights()["stable"]) == (0, 100)
    assert alias(store) == "1.0.0"
    moved = store.registry.history("orrery", "production")[-1]
    assert (moved["from"], moved["to"]) == ("1.0.1", "1.0.0")
    assert moved["reason"] == (f"{rollout.name}: rolled back (candidate error rate 50.0% > "
                               "2.0%)")  # fmt: skip


def test_a_failed_smoke_test_ends_it_without_touching_the_alias(store: RolloutStore) -> None:
    rollout = start(store)
    seen = {"answer": "la la la", "finish_reason": "length", "completion_tokens": 8}
    assert store.fail_smoke(rollout.name, "no end of turn within 8 tokens", seen) is True
    failed = store.get(rollout.name)
    assert (failed.status, failed.weight) == ("failed", 0)
    assert failed.history[-1]["reason"] == "no end of turn within 8 tokens"
    assert failed.history[-1]["values"] == seen
    assert store.switch(rollout.name, SMOKE) is False
    assert alias(store) == "1.0.0"
    assert failed.keep_loaded_until() == 0.0  # nothing to keep: it never switched
    assert store.list(active_only=True) == []
    start(store)  # the name is free for another try


def test_abort_after_the_switch_points_the_alias_back(store: RolloutStore) -> None:
    rollout = start(store)
    store.switch(rollout.name, SMOKE)
    aborted = store.abort(rollout.name, "users complained")
    assert (aborted.status, aborted.weight) == ("aborted", 0)
    assert alias(store) == "1.0.0"
    moved = store.registry.history("orrery", "production")[-1]
    assert moved["reason"] == f"{rollout.name} aborted: users complained"


def test_steps_make_no_sense_for_blue_green() -> None:
    with pytest.raises(ValueError, match="switches at once: leave out steps"):
        RolloutSpec(model="orrery:production", to="orrery:1.0.1", strategy="blue-green",
                    steps=[10, 100])  # fmt: skip


def test_cli_starts_a_blue_green_rollout(tmp_path: Path, two_versions: Registry) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    bad = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                    "--blue-green", "--steps", "50,100", env=env)  # fmt: skip
    assert bad.exit_code == 2
    assert "leave out steps" in bad.stderr
    bad = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                    "--blue-green", "--scale-down-delay", "later", env=env)  # fmt: skip
    assert bad.exit_code == 2
    assert "--scale-down-delay takes a duration like 60s" in bad.stderr
    started = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                        "--blue-green", "--scale-down-delay", "2m", env=env)  # fmt: skip
    assert started.exit_code == 0, started.stderr
    name = "rollout-orrery-production-1"
    assert "blue-green" in started.stdout
    (rollout,) = RolloutStore(two_versions).list()
    assert (rollout.strategy, rollout.scale_down_delay_s, rollout.status) == (
        "blue-green", 120, "warming")  # fmt: skip
    shown = run_astra("rollout", "status", name, env=env)
    assert "warming, candidate 0% (blue-green, not switched)" in shown.stdout
    assert datetime.fromisoformat(rollout.step_started_at) <= datetime.now().astimezone()
