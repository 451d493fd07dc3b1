"""`astra export` and `astra chat --lora` through the real command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runner import run_astra


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cli-export")
    result = run_astra(
        "export", str(tiny_model_dir), "--quant", "f32,f16,bf16,q4_k_m", "-o", str(out)
    )
    assert result.exit_code == 0, result.stderr
    return out, result.stdout


def test_export_prints_the_verification_table(exported: tuple[Path, str]) -> None:
    out, stdout = exported
    assert "model-f16.gguf" in stdout
    assert "model-q4_k_m.gguf" in stdout
    assert "12/12" in stdout  # every hard string tokenized as the HF tokenizer does
    assert f"exported: {out}" in stdout
    report = json.loads((out / "verify.json").read_text())
    assert [f["qtype"] for f in report["files"]] == ["f32", "f16", "bf16", "q4_k_m"]
    for entry in report["files"][:3]:  # the float types must match PyTorch
        assert entry["passed"] is True, entry
        assert entry["top1"] >= entry["top1_min"] >= 0.98
        assert entry["greedy_match"] is True
    assert report["files"][0]["kl_mean"] < report["files"][2]["kl_mean"]  # f32 beats bf16


def test_chat_runs_every_exported_file(exported: tuple[Path, str]) -> None:
    out, _ = exported
    for name in ("model-f32.gguf", "model-f16.gguf", "model-bf16.gguf", "model-q4_k_m.gguf"):
        result = run_astra("chat", str(out / name), "-p", "Hello", "--max-tokens", "8")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip(), name


def test_bad_quant_type_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_astra("export", str(tiny_model_dir), "--quant", "f16,q4_k_x", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown GGUF type 'q4_k_x'" in result.stderr
    assert "--quant" in result.stderr
    assert "q4_k_m" in result.stderr  # the valid choices are listed
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.gguf"))


def test_importance_matrix_types_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_astra("export", str(tiny_model_dir), "-q", "iq2_xs", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "importance matrix" in result.stderr


def test_chat_refuses_an_adapter_that_does_not_fit(exported: tuple[Path, str]) -> None:
    out, _ = exported
    result = run_astra(
        "chat", str(out / "model-f16.gguf"), "--lora", str(out / "verify.json"), "-p", "hi"
    )
    assert result.exit_code == 2
    assert "verify.json is not a GGUF file" in result.stderr
    result = run_astra(
        "chat", str(out / "model-f16.gguf"), "--lora", str(out / "model-q4_k_m.gguf"), "-p", "hi"
    )
    assert result.exit_code == 2
    assert "not a LoRA adapter" in result.stderr
