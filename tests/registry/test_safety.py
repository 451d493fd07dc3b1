"""Real processes: concurrent pushes corrupt nothing; a killed push leaves no version."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from astra_tune.registry.store import Registry, RegistryError
from tests.registry.conftest import other_gguf

PUSH_FILES = """
import sys
from pathlib import Path
from astra_tune.export.versions import request_from_gguf
from astra_tune.registry.store import Registry
registry = Registry(Path(sys.argv[1]))
for path in sys.argv[3:]:
    registry.push(request_from_gguf(Path(path), sys.argv[2]))
"""

PUSH_BIG = """
import sys
from pathlib import Path
from astra_tune.registry.layers import Layer
from astra_tune.registry.store import PushRequest, Registry
Registry(Path(sys.argv[1])).push(
    PushRequest("big", [Layer("model", Path(sys.argv[2]))], {"model_format": "gguf"}, {})
)
"""


def test_two_processes_pushing_at_once(tmp_path: Path, tiny_gguf: Path) -> None:
    root = tmp_path / "registry"
    Registry(root)  # create the index before the race, as any real setup would
    shared = other_gguf(tiny_gguf, tmp_path / "shared.gguf", b"SHARED!!")
    # Both processes push the same model bytes, from two paths: two versions (their
    # lineage names different files) sharing one model blob. The very same file twice
    # would be one version (identical content makes none new).
    batches = [
        [shutil.copy(shared, tmp_path / f"shared-{p}.gguf")]
        + [other_gguf(tiny_gguf, tmp_path / f"{p}-{i}.gguf", f"P{p}-I{i}!".encode())
           for i in range(4)]
        for p in range(2)
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSH_FILES, str(root), "shared", *map(str, batch)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for batch in batches
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err

    registry = Registry(root)
    versions = [v["version"] for v in registry.list_versions("shared")]
    assert sorted(versions, key=lambda v: tuple(map(int, v.split(".")))) == [
        f"1.0.{i}" for i in range(10)
    ]
    stored = [registry.resolve(f"shared:{v}").models["f16"].read_bytes() for v in versions]
    pushed = [p.read_bytes() for batch in batches for p in batch]
    assert sorted(stored) == sorted(pushed)  # every push is one version, with its own bytes
    assert registry.verify() == []
    assert registry.resolve("shared").version == "1.0.9"
    big_blobs = [p for p in (root / "blobs").glob("sha256-*") if p.stat().st_size > 2**20]
    assert len(big_blobs) == 9  # ten versions, nine distinct files: the shared one once


def test_a_killed_push_leaves_no_visible_version(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    big = tmp_path / "big.gguf"
    big.write_bytes(np.random.default_rng(0).bytes(400 * 2**20))
    proc = subprocess.Popen([sys.executable, "-c", PUSH_BIG, str(root), str(big)])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            partial = [p for p in (root / "blobs").glob(".incoming-*")
                       if p.stat().st_size > 50 * 2**20]  # fmt: skip
            if partial:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the push finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    registry = Registry(root)
    assert registry.list_versions() == []
    with pytest.raises(RegistryError, match="does not exist"):
        registry.resolve("big")
    assert list((root / "blobs").glob(".incoming-*")), "the kill left a partial upload"
    registry.gc(grace_seconds=0)
    assert not list((root / "blobs").glob(".incoming-*"))
    subprocess.run([sys.executable, "-c", PUSH_BIG, str(root), str(big)], check=True)
    assert Registry(root).resolve("big").models["gguf"].stat().st_size == big.stat().st_size
