"""Atomic writes leave whole files, with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from astra_tune.atomic import write_text


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        target = tmp_path / "verify.json"
        write_text(target, "{}\n")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644  # as GGUFs and open() get
        os.umask(0o077)
        private = tmp_path / "private.json"
        write_text(private, "{}\n")
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(previous)
    assert target.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
