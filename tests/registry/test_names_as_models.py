"""Registry names (NAME[:TAG|ALIAS]) work wherever a model is named: base_model, eval, export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from astra_tune.errors import ModelError
from astra_tune.export.versions import request_for, request_from_gguf
from astra_tune.models.resolve import parse_spec, resolve_model
from astra_tune.recipe import load_recipe
from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra

SAMPLE = Path(__file__).parents[2] / "src/astra_tune/data/samples/orrery/test.jsonl"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ASTRA_HOME, so the registry starts empty (and absent)."""
    home = tmp_path / "home"
    monkeypatch.setenv("ASTRA_HOME", str(home))
    return home


@pytest.fixture
def terse(home: Path, tiny_gguf: Path) -> Registry:
    registry = Registry()
    registry.push(request_from_gguf(tiny_gguf, "team/terse"))
    registry.tag("team/terse:1.0.0", "production")
    return registry


def tensors(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_asking_about_a_name_creates_no_registry(home: Path) -> None:
    assert parse_spec("team/assistant").kind == "hub"
    assert not (home / "registry").exists()


def test_a_registry_name_is_a_base_model_pinned_to_its_version(
    terse: Registry, tiny_gguf: Path, tmp_path: Path
) -> None:
    parsed = parse_spec("team/terse:production")
    assert (parsed.kind, parsed.spec) == ("registry", "team/terse:1.0.0")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: demo\nbase_model: team/terse:production\n")
    # The recipe records the version the alias points at now: moving the alias later
    # does not change what this recipe means.
    assert load_recipe(recipe).base_model == "team/terse:1.0.0"
    # Its weights are the dequantized GGUF: the same as from the file itself.
    by_name = tensors(resolve_model("team/terse").path)
    by_file = tensors(resolve_model(str(tiny_gguf)).path)
    assert by_name.keys() == by_file.keys()
    assert all((by_name[k] == by_file[k]).all() for k in by_file)


def test_eval_takes_a_registry_name(terse: Registry, tiny_gguf: Path, tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    data.write_text("".join(SAMPLE.read_text().splitlines(keepends=True)[:3]))
    out = tmp_path / "out"
    result = run_astra("eval", "team/terse:production", "--data", str(data), "--against",
                       str(tiny_gguf), "-o", str(out), "--metrics", "perplexity,exact_match",
                       "--max-new-tokens", "6")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    scores = json.loads((out / "scores.json").read_text())
    ppl = scores["comparison"]["perplexity"]
    # The version is that very file, on the same engine: identical, not merely close.
    assert ppl["model"]["value"] == ppl["against"]["value"]
    assert "team/terse:1.0.0 via llama.cpp" in json.dumps(scores)


def test_export_takes_a_registry_name(terse: Registry, tmp_path: Path) -> None:
    from gguf import GGUFReader

    out = tmp_path / "export"
    result = run_astra("export", "team/terse", "-q", "f16", "-o", str(out), "--no-verify")
    assert result.exit_code == 0, result.stderr
    files = sorted(p.name for p in out.glob("*.gguf"))
    assert len(files) == 1
    assert files[0].startswith("team-terse")
    assert GGUFReader(out / files[0]).fields["general.file_type"].parts[-1][0] == 1  # f16


def test_an_adapter_version_uses_its_run_while_the_run_is_unchanged(
    home: Path, tiny_lora_run: Any, tmp_path: Path
) -> None:
    from astra_tune.export.stage import export_model
    from astra_tune.recipe import ExportConfig

    run = tmp_path / "run"
    shutil.copytree(tiny_lora_run.run_dir, run)
    config = ExportConfig(quant=["f16"], adapter_only=True, verify=False,
                          output_dir=str(run / "export"))  # fmt: skip
    export_model(str(run), config)
    Registry().push(request_for(run, "team/lora"))
    assert resolve_model("team/lora").path == run / "adapter"
    # Trained again since (its lineage changed): the run no longer holds this version.
    lineage = json.loads((run / "lineage.json").read_text())
    (run / "lineage.json").write_text(json.dumps({**lineage, "global_step": -1}))
    with pytest.raises(ModelError, match="LoRA adapter GGUF over a base GGUF"):
        resolve_model("team/lora")
