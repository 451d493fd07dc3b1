"""Registry versions served: an adapter run (base GGUF + LoRA at run time), LRU and keep-alive."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import ollama
import openai

from tests.cli_runner import run_astra
from tests.serve.conftest import start_server, stop


def test_adapter_version_is_served_with_its_lora(
    tmp_path: Path, tiny_lora_run: Any, tiny_gguf_file: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_lora_run.run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    exported = run_astra("export", str(run), "--adapter-only", "-q", "f16", "--no-verify", env=env)
    assert exported.exit_code == 0, exported.stderr
    pushed = run_astra("registry", "push", str(run), "--name", "tuned", env=env)
    assert pushed.exit_code == 0, pushed.stderr
    # The same base file on its own, to compare with.
    base_pushed = run_astra("registry", "push", str(tiny_gguf_file), "--name", "base", env=env)
    assert base_pushed.exit_code == 0, base_pushed.stderr
    server = start_server(tiny_gguf_file, "--max-loaded", "1", "--keep-alive", "2", env=env,
                          serve_file=False)  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        names = {m.id for m in client.models.list()}
        assert {"tuned:latest", "tuned:1.0.0", "base:latest", "base:1.0.0"} <= names
        messages = [{"role": "user", "content": "Where is the orrery?"}]

        def answer(model: str) -> str:
            reply = client.chat.completions.create(model=model, messages=messages,
                                                   max_tokens=12, temperature=0)  # fmt: skip
            return reply.choices[0].message.content or ""

        tuned = answer("tuned")
        assert tuned
        assert answer("base") != tuned  # the adapter changes what the model says
        local = ollama.Client(host=server.url)
        assert [m.model for m in local.ps().models] == ["base:latest"]  # LRU cap of one
        assert answer("tuned") == tuned  # reloaded, same answer
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and local.ps().models:
            time.sleep(0.5)
        assert local.ps().models == []  # unloaded after its keep-alive
    finally:
        stop(server)
