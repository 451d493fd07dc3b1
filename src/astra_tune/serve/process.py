"""A private `astra serve` on loopback, for jobs that need an OpenAI-compatible endpoint.

Data augmentation defaults to the team's own models: a registry name, a .gguf file or
the bundled default model, served for the length of the job on a free 127.0.0.1 port.
A subprocess rather than a server thread: llama.cpp's threads and the job's own work
then never share one interpreter's lock, and a crash in one cannot take the other down.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from astra_tune.errors import ModelError

READY_TIMEOUT_S = 180.0


def model_spec(model: str) -> str:
    """What `astra serve -m` is given for `model`: the bundled model's GGUF, else as is."""
    from astra_tune.models.catalog import bundled_gguf_path, catalog_entry

    entry = catalog_entry(model)
    if entry is not None and entry.package is not None:
        return str(bundled_gguf_path(entry))
    return model


@contextmanager
def local_server(model: str, *, timeout_s: float = READY_TIMEOUT_S) -> Iterator[tuple[str, str]]:
    """Serve `model` on a free loopback port; yields (base URL ending in /v1, served name)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="astra-serve-", suffix=".log")[1])
    command = [sys.executable, "-m", "astra_tune", "serve", "-m", model_spec(model),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("w") as output:
        proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        name = _wait_ready(proc, url, log, model, timeout_s)
        yield f"{url}/v1", name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, log: Path, model: str, timeout_s: float
) -> str:
    """The served model's name, once the server lists it; a clear error if it never does."""
    import httpx as client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise ModelError(
                f"astra serve -m {model} exited with code {proc.returncode}:\n" + "\n".join(tail),
                where=f"astra serve -m {model}",
                fix="check the model name (astra registry list) or path; or pass --endpoint",
            )
        try:
            models = client.get(f"{url}/v1/models", timeout=2)
            if models.status_code == 200 and models.json().get("data"):
                return str(models.json()["data"][0]["id"])
        except client.HTTPError:
            pass
        time.sleep(0.3)
    raise ModelError(
        f"astra serve -m {model} did not answer within {timeout_s:.0f} s",
        where=url,
        fix="pass --endpoint of a running server instead",
    )
