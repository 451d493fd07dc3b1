"""A running server smoke-tests a blue-green candidate, switches at once, keeps the old side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from astra_tune.experiments.rollout import Rollout, RolloutStore
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra
from tests.registry.conftest import other_gguf
from tests.serve.conftest import start_server, stop


def _chat(url: str, user: str) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", timeout=120, headers={"X-Astra-User": user}, json={
        "model": "orrery:production", "stream": False, "options": {"num_predict": 2},
        "messages": [{"role": "user", "content": "hi"}],
    })  # fmt: skip


def _loaded(url: str) -> set[str]:
    return {m["digest"] for m in httpx.get(f"{url}/api/ps", timeout=10).json()["models"]}


def _digests(url: str) -> dict[str, str]:
    tags = httpx.get(f"{url}/api/tags", timeout=10).json()["models"]
    return {m["name"]: m["digest"] for m in tags}


def _ended(store: RolloutStore, name: str, *, leaving: str, seconds: float = 120) -> Rollout:
    deadline = time.monotonic() + seconds
    while (rollout := store.get(name)).status == leaving:
        assert time.monotonic() < deadline, rollout.history
        time.sleep(0.2)
    return rollout


def test_blue_green_switches_after_a_whole_answer_and_refuses_one_cut_off(
    tmp_path: Path, tiny_gguf_file: Path, default_gguf_file: Path
) -> None:
    from astra_tune.export.versions import request_from_gguf

    registry = Registry(tmp_path / "home" / "registry")
    registry.push(request_from_gguf(tiny_gguf_file, "orrery"))  # 1.0.0: random weights
    registry.push(request_from_gguf(default_gguf_file, "orrery"))  # 1.0.1: ends its turns
    rambler = other_gguf(tiny_gguf_file, tmp_path / "rambler.gguf", b"\x05\x06\x07\x08")
    registry.push(request_from_gguf(rambler, "orrery"))  # 1.0.2: never reaches end of turn
    registry.tag("orrery:1.0.0", "production")
    env = {"ASTRA_HOME": str(tmp_path / "home"), "ASTRA_SERVE_REGISTRY_POLL": "0.3",
           "ASTRA_SERVE_KEEP_ALIVE": "1"}  # fmt: skip
    server = start_server(Path("unused"), env=env, serve_file=False)
    store = RolloutStore(registry)
    try:
        digests = _digests(server.url)
        assert _chat(server.url, "u-0").headers["x-astra-model-version"] == "1.0.0"

        # A candidate cut off by the token limit never gets a request.
        started = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.2",
                            "--blue-green", "--smoke-max-tokens", "8", env=env)  # fmt: skip
        assert started.exit_code == 0, started.stderr
        (first,) = store.list()
        failed = _ended(store, first.name, leaving="warming")
        assert failed.status == "failed"
        reason = "no end of turn within 8 tokens (raise --smoke-max-tokens if answers are long)"
        assert failed.history[-1]["reason"] == reason
        assert failed.history[-1]["values"]["finish_reason"] == "length"
        assert failed.history[-1]["values"]["completion_tokens"] == 8
        assert registry.resolve("orrery:production").version == "1.0.0"
        versions = {_chat(server.url, f"u-{i}").headers["x-astra-model-version"]
                    for i in range(8)}  # fmt: skip
        assert versions == {"1.0.0"}

        # A candidate that answers whole is loaded, switched to at once, then watched.
        started = run_astra("rollout", "start", "orrery:production", "--to", "orrery:1.0.1",
                            "--blue-green", "--interval", "2s", "--min-requests", "3",
                            "--scale-down-delay", "10m", env=env)  # fmt: skip
        assert started.exit_code == 0, started.stderr
        second = store.list()[-1]
        switched = _ended(store, second.name, leaving="warming")
        assert switched.status == "running", switched.history
        smoke: dict[str, Any] = switched.history[-1]["values"]
        assert (switched.history[-1]["event"], smoke["finish_reason"]) == ("switched", "stop")
        assert smoke["answer"]
        assert smoke["completion_tokens"] < 256
        assert registry.resolve("orrery:production").version == "1.0.1"
        # Loaded by the smoke test, before any user was sent to it.
        assert digests["orrery:1.0.1"] in _loaded(server.url)

        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 120
        while store.get(second.name).status == "running":
            assert time.monotonic() < deadline, store.get(second.name).history
            reply = _chat(server.url, f"v-{len(seen)}")
            seen.append((reply.headers["x-astra-model-version"], reply.status_code))
        done = store.get(second.name)
        assert done.status == "done"
        assert [e["event"] for e in done.history] == ["start", "switched", "promoted"]
        assert seen[-1] == ("1.0.1", 200)
        assert {status for _, status in seen} == {200}
        # The old side outlives its 1 s keep-alive: it is held for the scale-down delay.
        time.sleep(3)
        assert {digests["orrery:1.0.0"], digests["orrery:1.0.1"]} <= _loaded(server.url)
        assert {_chat(server.url, f"w-{i}").headers["x-astra-model-version"]
                for i in range(6)} == {"1.0.1"}  # fmt: skip
    finally:
        stop(server)
