"""Experiments route a served name by a sticky hash of the user, the same on every server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai

from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra
from tests.serve.conftest import start_server, stop

USERS = [f"user-{i}" for i in range(16)]


def _openai(url: str, user: str) -> tuple[str, str, str]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="orrery:production", messages=[{"role": "user", "content": "hi"}],
        max_tokens=2, user=user,
    )  # fmt: skip
    h = raw.headers
    return h.get("x-astra-experiment", ""), h.get("x-astra-arm", ""), h["x-astra-model-version"]


def _ollama(url: str, user: str) -> tuple[str, str, str]:
    reply = httpx.post(f"{url}/api/chat", timeout=60, headers={"X-Astra-User": user}, json={
        "model": "orrery:production", "stream": False, "options": {"num_predict": 2},
        "messages": [{"role": "user", "content": "hi"}],
    })  # fmt: skip
    assert reply.status_code == 200, reply.text
    h = reply.headers
    return h.get("x-astra-experiment", ""), h.get("x-astra-arm", ""), h["x-astra-model-version"]


def test_same_user_same_arm_on_both_apis_and_servers_then_promotion(
    tmp_path: Path, two_versions: Registry, tiny_gguf_file: Path
) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home"), "ASTRA_SERVE_REGISTRY_POLL": "0.5"}
    created = run_astra("experiment", "create", "wren-ab", "--model", "orrery:production",
                        "--arm", "control=orrery:1.0.0", "--arm", "candidate=orrery:1.0.1",
                        "--split", "50,50", env=env)  # fmt: skip
    assert created.exit_code == 0, created.stderr
    servers = [start_server(tiny_gguf_file, env=env, serve_file=False) for _ in range(2)]
    try:
        a, b = (s.url for s in servers)
        first = {u: _openai(a, u) for u in USERS}
        assert first == {u: _ollama(b, u) for u in USERS}  # same arm on /v1 of A, /api of B
        arms = {arm for _, arm, _ in first.values()}
        assert arms == {"control", "candidate"}  # 16 users do not all hash to one arm
        for experiment, arm, version in first.values():
            assert experiment == "wren-ab"
            assert version == {"control": "1.0.0", "candidate": "1.0.1"}[arm]
        samples = servers[0].metrics()
        routed = sum(v for k, v in samples.items()
                     if k.startswith("astra:experiment_assignments_total{"))  # fmt: skip
        assert routed == len(USERS)

        moved = run_astra("experiment", "weights", "wren-ab", "--arm", "control=0",
                          "--arm", "candidate=100", env=env)  # fmt: skip
        assert moved.exit_code == 0, moved.stderr
        # Wait on a user who was in control: one already on the candidate would end the
        # wait before either server had read the new weights.
        mover = next(u for u, (_, arm, _) in first.items() if arm == "control")
        deadline = time.monotonic() + 20
        while {_openai(url, mover)[1] for url in (a, b)} != {"candidate"}:
            assert time.monotonic() < deadline, "the new weights never reached both servers"
            time.sleep(0.3)
        # Candidates stay candidates: everyone is now on the candidate.
        assert {_ollama(b, u)[1] for u in USERS} == {"candidate"}

        stopped = run_astra("experiment", "stop", "wren-ab", "--promote", "candidate",
                            "-m", "thumbs up", env=env)  # fmt: skip
        assert stopped.exit_code == 0, stopped.stderr
        assert "orrery:production now 1.0.1 (was 1.0.0)" in stopped.stdout
        deadline = time.monotonic() + 20
        while any(_openai(url, "user-1") != ("", "", "1.0.1") for url in (a, b)):
            assert time.monotonic() < deadline, "the promotion never reached both servers"
            time.sleep(0.3)
    finally:
        for server in servers:
            stop(server)
