"""Sticky, weight-true and monotone assignment of users to arms."""

from __future__ import annotations

from astra_tune.experiments.assignment import assign, request_unit

USERS = [f"user-{i}" for i in range(10_000)]


def _shares(weights: dict[str, float], salt: str = "s1") -> dict[str, float]:
    counts = dict.fromkeys(weights, 0)
    for user in USERS:
        counts[assign(salt, user, weights, "control")] += 1
    return {arm: 100 * n / len(USERS) for arm, n in counts.items()}


def test_split_is_within_one_point_of_the_weights() -> None:
    for weights in ({"control": 50, "candidate": 50}, {"control": 90, "candidate": 10},
                    {"control": 50, "b": 30, "c": 20}):  # fmt: skip
        shares = _shares(weights)
        for arm, weight in weights.items():
            assert abs(shares[arm] - weight) < 1.0, (weights, shares)


def test_raising_the_candidate_moves_users_only_out_of_control() -> None:
    before = {u: assign("s1", u, {"control": 90, "candidate": 10}, "control") for u in USERS}
    after = {u: assign("s1", u, {"control": 50, "candidate": 50}, "control") for u in USERS}
    moved = [u for u in USERS if before[u] != after[u]]
    assert all(before[u] == "control" and after[u] == "candidate" for u in moved)
    assert 3500 < len(moved) < 4500  # about 40% of users changed arm, all into the candidate
    # With several candidates, raising one never sends anyone back to control either.
    wide = {u: assign("s1", u, {"control": 40, "b": 40, "c": 20}, "control") for u in USERS}
    assert all(wide[u] != "control" for u in USERS if after[u] == "candidate")


def test_the_same_user_gets_the_same_arm_and_salts_are_independent() -> None:
    weights = {"control": 50, "candidate": 50}
    first = [assign("s1", u, weights, "control") for u in USERS[:500]]
    assert first == [assign("s1", u, weights, "control") for u in USERS[:500]]
    other = [assign("s2", u, weights, "control") for u in USERS[:500]]
    agree = sum(a == b for a, b in zip(first, other, strict=True))
    assert 200 < agree < 300  # another experiment's salt reshuffles (about half agree)
    assert {assign("s1", "u", {"control": 100, "candidate": 0}, "control")} == {"control"}


def test_unit_precedence_and_hashing() -> None:
    assert request_unit(user="alice", header="h", api_key="k").kind == "user"
    assert request_unit(header="h", api_key="k").kind == "header"
    assert request_unit(api_key="k").kind == "api_key"
    random_units = {request_unit().id for _ in range(5)}
    assert len(random_units) == 5  # a fresh id per request when nothing names the user
    unit = request_unit(user="alice@example.com")
    assert "alice" not in unit.hashed
    assert unit.hashed == request_unit(user="alice@example.com").hashed
