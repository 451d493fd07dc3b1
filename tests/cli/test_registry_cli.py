"""`astra registry` through the real command, on a tiny LoRA run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_astra


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_lora_run: Any) -> Path:
    copy = tmp_path_factory.mktemp("reg-run") / "run"
    shutil.copytree(tiny_lora_run.run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    result = run_astra("export", str(copy), "-q", "f16,q8_0", "--no-verify")
    assert result.exit_code == 0, result.stderr
    return copy


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"ASTRA_HOME": str(tmp_path / "home")}


def test_push_then_show_lineage(run: Path, env: dict[str, str]) -> None:
    result = run_astra("registry", "push", str(run), "--name", "tiny", env=env)
    assert result.exit_code == 0, result.stderr
    assert "pushed: tiny:1.0.0" in result.stdout
    shown = run_astra("registry", "show", "tiny", env=env)
    assert shown.exit_code == 0, shown.stderr
    lineage = json.loads((run / "lineage.json").read_text())
    for file, digest in lineage["data"]["sha256"].items():
        assert f"data {file}" in shown.stdout
        assert digest in shown.stdout  # the data hash
    assert "train.learning_rate" in shown.stdout
    assert "0.005" in shown.stdout  # the hyperparameter's value
    # `epochs: auto` shows as the value the run resolved from its data.
    assert f"{lineage['sizing']['epochs']:g} (auto)" in shown.stdout
    assert "f16" in shown.stdout
    assert "q8_0" in shown.stdout
    assert "metric train_loss" in shown.stdout
    assert "metric steps" in shown.stdout
    assert "<|im_end|>" in shown.stdout


def test_aliases_diff_and_remove(run: Path, env: dict[str, str]) -> None:
    assert run_astra("registry", "push", str(run), "--name", "tiny", env=env).exit_code == 0
    again = run_astra("registry", "push", str(run), "--name", "tiny", env=env)
    assert again.exit_code == 0
    assert "already stored: tiny:1.0.0 holds this content" in again.stdout
    pushed = run_astra("registry", "push", str(run), "--name", "tiny", "--version", "1.0.1",
                       env=env)  # fmt: skip
    assert pushed.exit_code == 0, pushed.stderr
    tagged = run_astra("registry", "tag", "tiny:1.0.0", "production", "-m", "launch", env=env)
    assert "tiny:production -> 1.0.0" in tagged.stdout
    run_astra("registry", "tag", "tiny:1.0.1", "production", env=env)
    back = run_astra("registry", "rollback", "tiny", "production", env=env)
    assert "tiny:production -> 1.0.0  (was 1.0.1)" in back.stdout
    listed = run_astra("registry", "list", env=env)
    assert "production" in listed.stdout
    assert "latest" in listed.stdout
    same = run_astra("registry", "diff", "tiny:1.0.0", "tiny:1.0.1", env=env)
    assert "have the same fields" in same.stdout
    assert run_astra("registry", "verify", env=env).exit_code == 0
    removed = run_astra("registry", "rm", "tiny:1.0.1", env=env)
    assert "removed: tiny:1.0.1" in removed.stdout
    out = Path(env["ASTRA_HOME"]) / "out"
    exported = run_astra("registry", "export", "tiny:production", str(out), env=env)
    assert exported.exit_code == 0, exported.stderr
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./tiny-lora-q8_0.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_user_errors_are_clear(run: Path, env: dict[str, str], tmp_path: Path) -> None:
    bad = run_astra("registry", "push", str(run), "--name", "../evil", env=env)
    assert bad.exit_code == 2
    assert "invalid model name '../evil'" in bad.stderr
    unknown = run_astra("registry", "history", "nosuch", env=env)
    assert unknown.exit_code == 2
    assert "no model named 'nosuch'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    assert "Traceback" not in bad.stderr
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("export"))
    missing = run_astra("registry", "push", str(bare), "--name", "x", env=env)
    assert missing.exit_code == 2
    assert f"astra export {bare}" in missing.stderr
    unknown = run_astra("registry", "show", "nothing:1.0.0", env=env)
    assert unknown.exit_code == 2
    assert "does not exist" in unknown.stderr


def test_push_an_export_directory(run: Path, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "gguf"
    exported = run_astra("export", str(run), "-q", "f16", "-o", str(out))
    assert exported.exit_code == 0, exported.stderr
    pushed = run_astra("registry", "push", str(out), "--name", "from-dir", env=env)
    assert pushed.exit_code == 0, pushed.stderr
    assert "pushed: from-dir:1.0.0" in pushed.stdout
    shown = run_astra("registry", "show", "from-dir", env=env)
    assert "f16" in shown.stdout
    # verify.json names the run, so the version keeps the run's lineage.
    assert "train.lora" in shown.stdout
    assert "data train.jsonl" in shown.stdout


def test_show_lists_the_evaluation_the_version_holds(
    run: Path, env: dict[str, str], tmp_path: Path
) -> None:
    evaluated = tmp_path / "run"
    shutil.copytree(run, evaluated)
    sample = Path(__file__).parents[2] / "src/astra_tune/data/samples/orrery/test.jsonl"
    data = tmp_path / "test.jsonl"
    data.write_text("".join(sample.read_text().splitlines(keepends=True)[:3]))
    scored = run_astra("eval", str(evaluated), "--data", str(data), "--metrics",
                       "perplexity,exact_match", "--max-new-tokens", "4")  # fmt: skip
    assert scored.exit_code == 0, scored.stderr
    scores = json.loads((evaluated / "eval" / "scores.json").read_text())
    assert run_astra("registry", "push", str(evaluated), "--name", "tiny", env=env).exit_code == 0
    shown = run_astra("registry", "show", "tiny", env=env)
    assert shown.exit_code == 0, shown.stderr
    assert "evaluation (3 held-out examples, 95% CI)" in shown.stdout
    ppl = scores["comparison"]["perplexity"]
    row = next(line for line in shown.stdout.splitlines() if "perplexity" in line)
    assert f"{ppl['model']['value']:.3g} [{ppl['model']['low']:.3g}," in row
    assert f"{ppl['difference']['value']:+.3g}" in row
