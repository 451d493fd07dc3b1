"""What to export: a full model directory as is, or base + adapter merged into one.

LoRA adapters merge into the base in fp32 on CPU (the base's own dtype on GPU). A QLoRA
adapter was trained against the 4-bit base, so it merges into that base dequantized,
not into the original weights it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from astra_tune.errors import ModelError
from astra_tune.progress import quiet_hf_progress, quiet_library_noise

SourceKind = Literal["model", "lora", "qlora"]


@dataclass(frozen=True)
class ExportSource:
    """The model to export, found from a spec."""

    kind: SourceKind
    model_dir: Path  # full model (or adapter directory for lora/qlora)
    base_dir: Path | None  # adapter runs: the base model directory
    run_dir: Path | None  # set when the spec is (inside) a training run
    name: str
    base_model: str | None
    license: str | None
    qlora: dict[str, Any] | None = None  # quant_type, double_quant of a QLoRA run


def find_source(spec: str) -> ExportSource:
    """Classify `spec` (run dir, adapter dir, model dir, catalog name, .gguf, registry
    NAME[:TAG]) for export."""
    from astra_tune.models.catalog import catalog_entry
    from astra_tune.models.resolve import parse_spec, resolve_model

    parsed = parse_spec(spec)
    if parsed.version is not None:
        # Its weights: the run it came from when unchanged, else its most precise GGUF.
        found = find_source(str(resolve_model(spec).path))
        return replace(found, name=parsed.version.name.replace("/", "-"))
    path = parsed.path
    if path is not None and (path / "adapter_config.json").is_file():
        run_dir = path.parent if (path.parent / "lineage.json").is_file() else None
        lineage = _lineage(run_dir)
        settings = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        base = Path(settings.get("base_model_name_or_path") or "")
        if not (base / "config.json").is_file():
            raise ModelError(
                f"the adapter's base model is not at {str(base)!r}",
                where=str(path / "adapter_config.json"),
                fix="prepare the base model again (`astra models pull`) or fix "
                "base_model_name_or_path",
            )
        hyper = lineage.get("hyperparameters", {})
        kind: SourceKind = "qlora" if lineage.get("method") == "qlora" else "lora"
        base_spec = lineage.get("base_model", {}).get("spec") or base.name
        entry = catalog_entry(base_spec) if isinstance(base_spec, str) else None
        return ExportSource(
            kind=kind,
            model_dir=path,
            base_dir=base,
            run_dir=run_dir,
            name=lineage.get("name") or (run_dir or path).name,
            base_model=base_spec,
            license=entry.license if entry else None,
            qlora=hyper.get("qlora") if kind == "qlora" else None,
        )
    resolved = resolve_model(spec)
    run_dir = resolved.path.parent if (resolved.path.parent / "lineage.json").is_file() else None
    lineage = _lineage(run_dir)
    entry = parsed.entry
    base_spec = lineage.get("base_model", {}).get("spec")
    if entry is None and isinstance(base_spec, str):
        entry = catalog_entry(base_spec)
    return ExportSource(
        kind="model",
        model_dir=resolved.path,
        base_dir=None,
        run_dir=run_dir,
        name=lineage.get("name") or (entry.name if parsed.entry else resolved.path.name),
        base_model=base_spec or (entry.hub_id if entry else None),
        license=entry.license if entry else None,
    )


def merged_dir(source: ExportSource, work: Path) -> Path:
    """An HF directory holding the model to convert (merged when `source` is an adapter)."""
    if source.kind == "model":
        return source.model_dir
    target = work / "merged"
    if (target / "config.json").is_file():
        return target
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    assert source.base_dir is not None
    dtype = _merge_dtype(source.base_dir)
    with quiet_hf_progress(), quiet_library_noise():
        base = load_base(source, dtype)
        model = PeftModel.from_pretrained(base, str(source.model_dir)).merge_and_unload()
        model.to(dtype)
        model.save_pretrained(target, safe_serialization=True)
        tokenizer_dir = (
            source.model_dir if (source.model_dir / "tokenizer.json").is_file() else source.base_dir
        )
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    del model, base
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the merged copy is on disk; free the GPU for the next stage
    return target


def adapter_base_dir(source: ExportSource, work: Path) -> Path:
    """The base model an adapter GGUF runs on (the dequantized 4-bit base for QLoRA)."""
    assert source.base_dir is not None
    if source.kind == "lora":
        return source.base_dir
    target = work / "base-dequantized"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoTokenizer

    with quiet_hf_progress(), quiet_library_noise():
        base = load_base(source, _merge_dtype(source.base_dir))
        base.save_pretrained(target, safe_serialization=True)
        AutoTokenizer.from_pretrained(source.base_dir).save_pretrained(target)
    return target


def load_base(source: ExportSource, dtype: Any) -> Any:
    """The base model an adapter was trained on, in `dtype` (4-bit weights dequantized)."""
    from transformers import AutoModelForCausalLM

    assert source.base_dir is not None
    model = AutoModelForCausalLM.from_pretrained(source.base_dir, dtype=dtype)
    if source.kind != "qlora":
        return model
    _replace_with_dequantized(model, source, dtype)
    return model


def _replace_with_dequantized(model: Any, source: ExportSource, dtype: Any) -> None:
    """Overwrite each linear weight with its 4-bit round trip, as QLoRA training saw it."""
    import torch
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    settings = source.qlora or {}
    quant_type = settings.get("quant_type", "nf4")
    double = bool(settings.get("double_quant", True))
    skip = _unquantized_modules(model)
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name in skip:
                continue
            weight = module.weight.data
            # Quantize from the same bf16/fp32 values transformers hands to bitsandbytes.
            packed, state = quantize_4bit(
                weight.to(torch.float32), quant_type=quant_type, compress_statistics=double
            )
            module.weight.data = dequantize_4bit(packed, state).to(dtype)


def _unquantized_modules(model: Any) -> set[str]:
    # transformers keeps the output head in full precision when it loads a 4-bit model.
    names = {"lm_head"}
    return names | {n for n, _ in model.named_modules() if n.endswith("lm_head")}


def _merge_dtype(base_dir: Path) -> Any:
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def _lineage(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None or not (run_dir / "lineage.json").is_file():
        return {}
    try:
        return json.loads((run_dir / "lineage.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"the run's lineage.json is not valid JSON: {exc}",
            where=str(run_dir / "lineage.json"),
            fix="the run did not finish; run `astra train` again to complete it",
        ) from exc
