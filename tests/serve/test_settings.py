"""Serve settings: file < environment < flags, validated, keys kept only as hashes."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.serve.settings import load_settings
from tests.cli_runner import run_astra


def test_file_environment_and_flags_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 9001\nmax_queue: 3\napi_keys: [from-file]\ncors_origins: [http://a]\n")
    monkeypatch.setenv("ASTRA_SERVE_MAX_QUEUE", "5")
    monkeypatch.setenv("ASTRA_SERVE_CORS_ORIGINS", "http://b, http://c")
    settings = load_settings(config, {"port": 9002, "api_keys": ["from-flag"]})
    assert settings.port == 9002  # flag beats file
    assert settings.max_queue == 5  # environment beats file
    assert settings.cors_origins == ["http://b", "http://c"]
    hashes = settings.key_hashes()
    assert hashes == {"sha256:" + hashlib.sha256(b"from-flag").hexdigest()}
    assert all("from-flag" not in h for h in hashes)


def test_invalid_settings_list_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("port: 70000\nmax_queue: 0\nworkers: 4\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    text = str(caught.value)
    assert "port" in text
    assert "max_queue" in text
    assert "workers" in text  # unknown keys are errors too
    assert str(config) in text


def test_cli_reports_bad_settings_without_traceback(tmp_path: Path) -> None:
    result = run_astra("serve", "--port", "70000", "-m", str(tmp_path / "missing.gguf"))
    assert result.exit_code == 2
    assert "port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_astra("serve", "--port", str(port), env={"ASTRA_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "serving" not in result.stderr  # refused before announcing anything
    assert "Traceback" not in result.stderr
