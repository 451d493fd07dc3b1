"""Experiments in the registry database: created whole or not at all, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.experiments.store import (
    ExperimentError,
    ExperimentNotFoundError,
    ExperimentStore,
    parse_spec,
)
from astra_tune.export.versions import request_from_gguf
from astra_tune.registry.store import Registry
from tests.registry.conftest import other_gguf


@pytest.fixture
def store(tmp_path: Path, tiny_gguf_file: Path) -> ExperimentStore:
    registry = Registry(tmp_path / "registry")
    registry.push(request_from_gguf(tiny_gguf_file, "orrery"))
    other = other_gguf(tiny_gguf_file, tmp_path / "other.gguf", b"\x01\x02\x03\x04")
    registry.push(request_from_gguf(other, "orrery"))
    registry.tag("orrery:1.0.0", "production")
    return ExperimentStore(registry)


def spec(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "name": "wren-ab", "model": "orrery:production",
        "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}, "split": [50, 50],
    }  # fmt: skip
    return {**values, **changes}


def test_create_read_reweight_and_stop_with_promotion(store: ExperimentStore) -> None:
    marker = store.change_marker()
    created = store.create(parse_spec(spec()))
    assert created.control == "control"
    assert created.model == "orrery:production"
    assert created.weights() == {"control": 50, "candidate": 50}
    assert store.change_marker() != marker
    assert store.get("wren-ab") == created
    # Another handle on the same database (another process) sees the same salt and arms.
    again = ExperimentStore(Registry(store.registry.root)).get("wren-ab")
    assert again.salt == created.salt
    assert store.set_weights("wren-ab", {"control": 10, "candidate": 90}).weights() == {
        "control": 10, "candidate": 90
    }  # fmt: skip
    stopped = store.stop("wren-ab", promote="candidate", reason="thumbs up 71% vs 52%")
    assert stopped.status == "stopped"
    assert stopped.result["version"] == "1.0.1"
    assert store.registry.resolve("orrery:production").version == "1.0.1"
    last = store.registry.history("orrery", "production")[-1]
    assert last["reason"] == "experiment wren-ab: candidate promoted (thumbs up 71% vs 52%)"
    assert store.list(running_only=True) == []


def test_bad_specs_name_each_field_and_store_nothing(store: ExperimentStore) -> None:
    arms = {"control": "orrery:1.0.0", "Cand!": "orrery:9.9.9"}
    with pytest.raises(ConfigError) as caught:
        store.create(parse_spec(spec(split=[60, 30], arms=arms)))
    paths = {p.path for p in caught.value.problems}
    assert paths == {"split", "arms.Cand!"}  # both problems at once, each with its field
    assert "sum to 90, not 100" in str(caught.value)
    with pytest.raises(ConfigError, match=r"orrery:9\.9\.9 does not exist"):
        store.create(parse_spec(spec(arms={"control": "orrery:1.0.0", "c": "orrery:9.9.9"})))
    with pytest.raises(ConfigError) as unknown_field:
        parse_spec(spec(splitt=[50, 50]))
    assert {p.path for p in unknown_field.value.problems} == {"splitt"}
    assert store.list() == []  # nothing half-created
    store.create(parse_spec(spec()))
    with pytest.raises(ExperimentError, match="already in experiment 'wren-ab'"):
        store.create(parse_spec(spec(name="second")))
    with pytest.raises(ExperimentNotFoundError, match="no arm 'treatment'"):
        store.set_weights("wren-ab", {"treatment": 100})
    with pytest.raises(ConfigError, match="sum to 150"):
        store.set_weights("wren-ab", {"control": 100})
    with pytest.raises(ExperimentNotFoundError, match="no experiment named 'nosuch'"):
        store.get("nosuch")
    assert store.get("wren-ab").weights() == {"control": 50, "candidate": 50}
