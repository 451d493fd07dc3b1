"""Alias moves made anywhere reach running servers without a restart; responses name the version."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import openai

from astra_tune.registry.store import Registry
from astra_tune.serve.app import build_server
from astra_tune.serve.settings import ServeSettings
from tests.cli_runner import run_astra
from tests.serve.conftest import start_server, stop


def test_reload_follows_moves_made_through_another_registry_handle(
    two_versions: Registry,
) -> None:
    state = build_server(ServeSettings(), two_versions)
    assert state.catalog.get("orrery:production").version == "1.0.0"
    elsewhere = Registry(two_versions.root)  # as another process or machine would
    marker = two_versions.change_marker()
    elsewhere.tag("orrery:1.0.1", "production", reason="canary passed")
    assert two_versions.change_marker() != marker
    assert state.reload_registry() == ["orrery:production"]
    assert state.catalog.get("orrery:production").version == "1.0.1"
    assert state.reload_registry() == []  # nothing moved since
    elsewhere.rollback("orrery", "production")
    elsewhere.tag("orrery:1.0.1", "staging")
    assert state.reload_registry() == ["orrery:production", "orrery:staging"]
    assert state.catalog.get("orrery:production").version == "1.0.0"
    elsewhere.remove("orrery:staging")
    assert state.reload_registry() == ["orrery:staging"]
    assert "orrery:staging" not in {m.name for m in state.catalog.all()}


def test_a_server_given_names_keeps_to_them(two_versions: Registry) -> None:
    state = build_server(ServeSettings(models=["orrery:production"]), two_versions)
    Registry(two_versions.root).tag("orrery:1.0.1", "production")
    Registry(two_versions.root).tag("orrery:1.0.1", "staging")
    assert state.reload_registry() == ["orrery:production"]  # staging is not served here
    assert [m.name for m in state.catalog.all()] == ["orrery:production"]
    assert state.catalog.get("orrery:production").version == "1.0.1"


def test_after_a_move_the_alias_is_answered_by_the_new_versions_weights(
    two_versions: Registry,
) -> None:
    state = build_server(ServeSettings(models=["orrery:production"]), two_versions)
    try:
        before = state.pool.get(state.catalog.get("orrery:production"))
        Registry(two_versions.root).tag("orrery:1.0.1", "production")
        assert state.reload_registry() == ["orrery:production"]
        after = state.pool.get(state.catalog.get("orrery:production"))
        assert after is not before
        assert after.model.version == "1.0.1"
        assert after.model.gguf in two_versions.resolve("orrery:1.0.1").models.values()
        assert before.model.gguf != after.model.gguf
        assert sorted(state.pool.engines) == ["orrery:1.0.0", "orrery:1.0.1"]
    finally:
        state.pool.close()


def _versions(url: str) -> tuple[str, str]:
    """The version header on an OpenAI and an Ollama chat answer from `url`."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="orrery:production", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert raw.parse().choices[0].message.content is not None
    ollama_reply = httpx.post(f"{url}/api/chat", timeout=60, json={
        "model": "orrery:production", "stream": False, "options": {"num_predict": 2},
        "messages": [{"role": "user", "content": "hi"}],
    })  # fmt: skip
    assert ollama_reply.status_code == 200, ollama_reply.text
    return raw.headers["x-astra-model-version"], ollama_reply.headers["x-astra-model-version"]


def _wait_for(servers: list[str], version: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        seen = [_versions(url) for url in servers]
        if all(pair == (version, version) for pair in seen):
            return
        assert time.monotonic() < deadline, f"still {seen}, expected {version}"
        time.sleep(0.3)


def test_two_servers_follow_tag_and_rollback_done_by_the_cli(
    tmp_path: Path, two_versions: Registry, tiny_gguf_file: Path
) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home"), "ASTRA_SERVE_REGISTRY_POLL": "0.5"}
    servers = [start_server(tiny_gguf_file, env=env, serve_file=False) for _ in range(2)]
    try:
        urls = [s.url for s in servers]
        assert [_versions(url) for url in urls] == [("1.0.0", "1.0.0")] * 2
        tagged = run_astra("registry", "tag", "orrery:1.0.1", "production", env=env)
        assert tagged.exit_code == 0, tagged.stderr
        _wait_for(urls, "1.0.1")
        rolled = run_astra("registry", "rollback", "orrery", "production", env=env)
        assert rolled.exit_code == 0, rolled.stderr
        _wait_for(urls, "1.0.0")
        reloads = servers[0].metrics()["astra:registry_reloads_total{outcome=changed}"]
        assert reloads >= 2
    finally:
        for server in servers:
            stop(server)


def test_experiment_arms_and_rollout_sides_are_kept_loaded(two_versions: Registry) -> None:
    from astra_tune.experiments.rollout import RolloutSpec, RolloutStore
    from astra_tune.experiments.store import ExperimentStore, parse_spec

    state = build_server(ServeSettings(), two_versions)
    assert state.pool.pins == {}
    experiments = ExperimentStore(two_versions)
    experiments.create(parse_spec({
        "name": "wren-ab", "model": "orrery:production", "split": [50, 50],
        "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}}))  # fmt: skip
    state.reload_experiments()
    assert state.pool.pins == {"orrery:1.0.0": math.inf, "orrery:1.0.1": math.inf}
    experiments.stop("wren-ab")
    state.reload_experiments()
    assert state.pool.pins == {}
    rollouts = RolloutStore(two_versions)
    spec = RolloutSpec(model="orrery:production", to="orrery:1.0.1", strategy="blue-green",
                       scale_down_delay_s=600)  # fmt: skip
    rollout = rollouts.start(spec)
    rollouts.switch(rollout.name, {})
    state.reload_experiments()
    assert state.pool.pins == {"orrery:1.0.0": math.inf, "orrery:1.0.1": math.inf}
    rollouts.abort(rollout.name)
    state.reload_experiments()
    switched = rollouts.get(rollout.name).switched_at
    assert switched is not None
    held = switched.timestamp() + 600
    assert state.pool.pins == {"orrery:1.0.0": held, "orrery:1.0.1": held}
