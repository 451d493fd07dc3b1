"""LoRA and QLoRA runs: merged exports, adapter GGUFs applied by llama.cpp at run time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from astra_tune.errors import ModelError
from astra_tune.export.merge import find_source, load_base
from astra_tune.export.stage import export_model
from astra_tune.export.verify import build_reference, check_gguf
from astra_tune.recipe import ExportConfig
from astra_tune.train.run import TrainResult


def strengthened(run: TrainResult, tmp: Path, *, rslora: bool = False) -> Path:
    """A copy of the run whose adapter has large random B matrices (and rsLoRA if asked).

    A few training steps leave B near zero, which would let a wrong adapter pass; these
    change the model's predictions at most positions.
    """
    run_copy = tmp / "run"
    shutil.copytree(run.run_dir, run_copy, ignore=shutil.ignore_patterns("checkpoints"))
    adapter = run_copy / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    # The same effective update either way: rsLoRA scales by alpha/sqrt(r), not alpha/r.
    settings = json.loads((adapter / "adapter_config.json").read_text())
    size = 0.5 * (settings["r"] ** 0.5 / settings["r"] if rslora else 1.0)
    for key, value in weights.items():
        if "lora_B" in key:
            weights[key] = torch.randn(value.shape, generator=generator) * size
    save_file(weights, str(adapter / "adapter_model.safetensors"))
    if rslora:
        settings["use_rslora"] = True
        (adapter / "adapter_config.json").write_text(json.dumps(settings))
    return run_copy


@pytest.mark.parametrize("rslora", [False, True])
def test_adapter_gguf_on_the_base_matches_the_merged_model(
    tmp_path: Path,
    tiny_lora_run: TrainResult,
    tiny_model_dir: Path,
    rslora: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = strengthened(tiny_lora_run, tmp_path, rslora=rslora)
    result = export_model(
        str(run), ExportConfig(quant=["f16"], adapter_only=True, output_dir=str(tmp_path / "out"))
    )
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert names == ["Modelfile", "model-f16.gguf", "tiny-lora-adapter.gguf", "verify.json"]
    modelfile = (result.out_dir / "Modelfile").read_text()
    assert "\nFROM ./model-f16.gguf\nADAPTER ./tiny-lora-adapter.gguf\n" in modelfile
    (report,) = result.reports
    assert report.adapter == "tiny-lora-adapter.gguf"
    assert report.passed, report.failures
    assert report.top1 is not None
    assert report.top1 >= 0.99
    assert report.greedy_match is True

    adapter = gguf.GGUFReader(result.out_dir / "tiny-lora-adapter.gguf")
    meta = {k: f.contents() for k, f in adapter.fields.items()}
    assert meta["general.type"] == "adapter"
    assert meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 16.0
    names = {t.name for t in adapter.tensors}
    assert "blk.0.attn_q.weight.lora_a" in names
    assert "blk.1.ffn_down.weight.lora_b" in names

    from tests.cli_runner import run_astra

    chat = run_astra(
        "chat", str(result.out_dir / "model-f16.gguf"), "--lora", str(result.adapter),
        "-p", "Hello", "--max-tokens", "4",
    )  # fmt: skip
    assert chat.exit_code == 0, chat.stderr
    assert chat.stdout.strip()

    # The same check fails without the adapter: the base alone is a different model.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    merged = _merged_reference(run, tmp_path)
    alone = check_gguf(result.out_dir / "model-f16.gguf", "f16", merged, tokenizer)
    assert alone.top1 is not None
    assert alone.top1 < 0.9
    if rslora:  # and an adapter scaled as plain LoRA (alpha/r) is visibly wrong
        from astra_tune.export import lora

        monkeypatch.setattr(lora, "_peft_scale", lambda s, module, rank: s["lora_alpha"] / rank)
        wrong = lora.write_adapter_gguf(
            run / "adapter", tiny_model_dir, tmp_path / "wrong.gguf", metadata={}
        )
        mis = check_gguf(result.out_dir / "model-f16.gguf", "f16", merged, tokenizer, adapter=wrong)
        assert mis.top1 is not None
        assert mis.top1 < 0.95


def _merged_reference(run: Path, tmp_path: Path) -> Any:
    from peft import PeftModel

    source = find_source(str(run))
    model = PeftModel.from_pretrained(load_base(source, torch.float32), str(run / "adapter"))
    merged = tmp_path / "merged-ref"
    model.merge_and_unload().save_pretrained(merged)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(run / "adapter").save_pretrained(merged)
    return build_reference(merged, positions=256)


def test_lora_run_exports_merged(tmp_path: Path, tiny_lora_run: TrainResult) -> None:
    run = strengthened(tiny_lora_run, tmp_path)
    result = export_model(str(run), ExportConfig(quant=["f16", "q8_0"]))
    assert result.out_dir == run / "export"
    assert sorted(p.name for p in result.out_dir.iterdir()) == [
        "Modelfile",
        "tiny-lora-f16.gguf",
        "tiny-lora-q8_0.gguf",
        "verify.json",
    ]
    f16 = result.reports[0]
    assert f16.passed
    assert f16.top1 is not None
    assert f16.top1 >= 0.99
    assert f16.reader is True  # transformers reads back the merged weights
    # A run's verification asks for one of its trained answers and records whether it stops.
    assert f16.stops_at_eot is not None
    meta = {k: f.contents() for k, f in gguf.GGUFReader(result.files[0].path).fields.items()}
    assert meta["general.name"] == "tiny-lora"
    assert meta["general.base_model.0.name"] == str(find_source(str(run)).base_model)


def test_qlora_merges_into_the_dequantized_base(
    tmp_path: Path, tiny_qlora_run: TrainResult, tiny_model_dir: Path
) -> None:
    source = find_source(str(tiny_qlora_run.run_dir))
    assert source.kind == "qlora"
    assert source.qlora == {"quant_type": "nf4", "double_quant": True}
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    # What training saw: bitsandbytes' own 4-bit load of the base.
    four_bit = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir,
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        ),
        device_map={"": "cpu"},
    )
    from bitsandbytes.functional import dequantize_4bit

    ours = dict(load_base(source, torch.float32).named_modules())
    original = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_modules())
    name = "model.layers.0.self_attn.q_proj"
    module = dict(four_bit.named_modules())[name]
    seen = dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    assert torch.equal(ours[name].weight.data, seen)
    assert not torch.equal(original[name].weight.data, seen)

    result = export_model(
        str(tiny_qlora_run.run_dir),
        ExportConfig(quant=["f16"], output_dir=str(tmp_path / "out")),
    )
    assert result.reports[0].passed, result.reports[0].failures
    assert result.reports[0].top1 is not None
    assert result.reports[0].top1 >= 0.99


def test_dora_cannot_be_an_adapter_gguf(tmp_path: Path, tiny_lora_run: TrainResult) -> None:
    run = strengthened(tiny_lora_run, tmp_path)
    settings = json.loads((run / "adapter" / "adapter_config.json").read_text())
    settings["use_dora"] = True
    (run / "adapter" / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match="DoRA") as caught:
        export_model(str(run), ExportConfig(quant=["f16"], adapter_only=True))
    assert "without --adapter-only" in str(caught.value)


def test_adapter_only_needs_an_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from astra_tune.errors import ConfigError

    with pytest.raises(ConfigError, match="no adapter"):
        export_model(
            str(tiny_model_dir),
            ExportConfig(quant=["f16"], adapter_only=True, output_dir=str(tmp_path)),
        )


def test_lora_b_rows_are_permuted_like_the_weights(
    tmp_path: Path, tiny_lora_run: TrainResult
) -> None:
    from astra_tune.export.convert import permute_rows
    from astra_tune.export.lora import write_adapter_gguf

    run = strengthened(tiny_lora_run, tmp_path)
    source = find_source(str(run))
    assert source.base_dir is not None
    out = write_adapter_gguf(run / "adapter", source.base_dir, tmp_path / "a.gguf", metadata={})
    written = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    key = next(k for k in weights if "layers.0.self_attn.q_proj.lora_B" in k)
    config = json.loads((source.base_dir / "config.json").read_text())
    np.testing.assert_array_equal(
        written["blk.0.attn_q.weight.lora_b"],
        permute_rows(weights[key].numpy(), config["num_attention_heads"]),
    )
    key_a = key.replace("lora_B", "lora_A")
    np.testing.assert_array_equal(written["blk.0.attn_q.weight.lora_a"], weights[key_a].numpy())


def test_adapter_for_another_base_is_refused_before_llama_cpp(
    tmp_path: Path, tiny_lora_run: TrainResult, tiny_qwen2_dir: Path
) -> None:
    from transformers import AutoTokenizer

    from astra_tune.export.convert import write_gguf
    from astra_tune.export.lora import write_adapter_gguf
    from astra_tune.models.gguf_meta import check_adapter_file
    from astra_tune.models.tiny import TinyConfig, build_tiny_model

    source = find_source(str(tiny_lora_run.run_dir))
    assert source.base_dir is not None
    adapter = write_adapter_gguf(
        tiny_lora_run.output_dir, source.base_dir, tmp_path / "a.gguf", metadata={}
    )
    tokenizer = AutoTokenizer.from_pretrained(source.base_dir)
    wider = build_tiny_model(
        tmp_path / "wider", tokenizer=tokenizer, config=TinyConfig(hidden_size=96, num_heads=4)
    )
    for other, message in ((wider, "does not fit"), (tiny_qwen2_dir, "adapts a llama model")):
        base = write_gguf(other, tmp_path / f"{other.name}.gguf", "f16", tokenizer=tokenizer,
                          metadata={}).path  # fmt: skip
        with pytest.raises(ModelError, match=message):
            check_adapter_file(adapter, base)


def test_export_uses_the_runs_recipe_section(tmp_path: Path, tiny_lora_run: TrainResult) -> None:
    import yaml

    from tests.cli_runner import run_astra

    run = tmp_path / "run"
    shutil.copytree(tiny_lora_run.run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["export"] = {"quant": ["q8_0"], "verify": False}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = run_astra("export", str(run))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (run / "export").iterdir()) == [
        "Modelfile",
        "tiny-lora-q8_0.gguf",
    ]
    result = run_astra("export", str(run), "--quant", "f16", "--no-verify")
    assert result.exit_code == 0, result.stderr
    assert (run / "export" / "tiny-lora-f16.gguf").is_file()
