"""A running server routes a canary by its weight, checks it, and rolls a broken one back."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

import httpx

from astra_tune.experiments.rollout import RolloutStore
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra
from tests.serve.conftest import start_server, stop


def _chat(url: str, user: str) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", timeout=60, headers={"X-Astra-User": user}, json={
        "model": "orrery:production", "stream": False, "options": {"num_predict": 2},
        "messages": [{"role": "user", "content": "hi"}],
    })  # fmt: skip


def test_a_candidate_whose_file_fails_is_rolled_back_by_the_server(
    tmp_path: Path, two_versions: Registry
) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home"), "ASTRA_SERVE_REGISTRY_POLL": "0.3"}
    # tiny_gguf_file is not served: the server serves the whole registry.
    server = start_server(Path("unused"), env=env, serve_file=False)
    try:
        candidate = two_versions.resolve("orrery:1.0.1", verify=False)
        # The candidate's weights go bad on disk after the server listed it: its first
        # load fails inside llama.cpp, so every answer it is given is an error.
        blob = next(iter(candidate.models.values()))
        broken = blob.with_name("broken")
        broken.write_bytes(blob.read_bytes()[:4096])
        os.replace(broken, blob)  # a new file: never truncate what a hard link shares

        started = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                            "--steps", "50,100", "--interval", "2s", "--failure-limit", "2",
                            "--min-requests", "3", env=env)  # fmt: skip
        assert started.exit_code == 0, started.stderr
        store = RolloutStore(two_versions)
        (rollout,) = store.list()
        deadline = time.monotonic() + 20
        while not _chat(server.url, "user-0").headers.get("x-astra-experiment"):
            assert time.monotonic() < deadline, "the server never routed the rollout"
            time.sleep(0.2)
        seen: dict[str, set[int]] = {"1.0.0": set(), "1.0.1": set()}
        users = (f"user-{i}" for i in itertools.count())
        deadline = time.monotonic() + 90  # the bar: within interval x failure limit (+ slack)
        while store.get(rollout.name).status == "running":
            assert time.monotonic() < deadline, store.get(rollout.name).history
            reply = _chat(server.url, next(users))
            seen[reply.headers["x-astra-model-version"]].add(reply.status_code)
        ended = store.get(rollout.name)
        assert ended.status == "rolled_back"
        assert [e["event"] for e in ended.history][-2:] == ["fail", "rolled back"]
        assert ended.history[-1]["values"]["candidate_error_rate"] == 1.0
        assert seen == {"1.0.0": {200}, "1.0.1": {500}}
        assert two_versions.resolve("orrery:production").version == "1.0.0"

        # Once the server reads the rollback, nobody is sent to the candidate.
        deadline = time.monotonic() + 20
        while _chat(server.url, "user-probe").headers.get("x-astra-experiment"):
            assert time.monotonic() < deadline, "the server kept routing the rollout"
            time.sleep(0.3)
        after = [_chat(server.url, f"after-{i}") for i in range(12)]
        assert {(r.status_code, r.headers["x-astra-model-version"]) for r in after} == {
            (200, "1.0.0")}  # fmt: skip
        shown = run_astra("rollout", "status", rollout.name, env=env)
        assert "rolled_back, candidate 0%" in shown.stdout
        assert "candidate error rate 100.0% > 2.0%" in shown.stdout
    finally:
        stop(server)
