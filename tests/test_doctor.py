from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from astra_tune import doctor
from astra_tune.doctor import Package, run_doctor
from tests.cli_runner import run_astra


def test_report_finds_the_installed_stack() -> None:
    report = run_doctor()
    found = {check.name: check for check in report.software}
    assert found["torch"].found == importlib.metadata.version("torch")
    assert found["llama-cpp-python"].found == importlib.metadata.version("llama_cpp_python")
    assert found["Python"].found == ".".join(map(str, sys.version_info[:3]))
    assert report.default_model.ok
    assert report.failures == []
    assert report.dtype in {"float32", "bfloat16", "float16"}
    assert report.home_free_bytes > 0


def test_missing_required_package_is_a_failure_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Package("imaginary-lib", "imaginary-lib-astra", "imaginary_lib")
    monkeypatch.setattr(doctor, "PACKAGES", (*doctor.PACKAGES, fake))
    report = run_doctor()
    [failure] = report.failures
    assert failure.name == "imaginary-lib"
    assert failure.found == "not installed"
    assert failure.fix is not None
    assert "make install" in failure.fix


def test_qlora_check_quantizes_for_real() -> None:
    check = run_doctor().qlora
    assert check.ok, check.found
    assert "NF4 round-trip error" in check.found


def test_cli_doctor_prints_versions_hardware_and_dtype() -> None:
    result = run_astra("doctor")
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    for name in ("torch", "transformers", "peft", "trl", "datasets", "gguf", "llama-cpp-python"):
        assert name in out
    assert importlib.metadata.version("transformers") in out
    for item in ("AVX2", "AVX-512", "native bf16", "RAM", "CUDA", "ASTRA_HOME", "training dtype"):
        assert item in out
    assert "QLoRA" in out


def test_cli_doctor_exits_nonzero_naming_the_fix() -> None:
    # Run the real CLI with one required package that cannot be found.
    code = (
        "import sys; from astra_tune import doctor; from astra_tune.cli.app import main;"
        "doctor.PACKAGES = (*doctor.PACKAGES,"
        " doctor.Package('imaginary-lib', 'imaginary-lib-astra', 'imaginary_lib'));"
        " sys.argv = ['astra', 'doctor']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 1
    assert "1 required piece(s) missing" in proc.stdout
    assert "imaginary-lib: run `make install`" in proc.stdout
