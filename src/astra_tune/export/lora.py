"""A PEFT LoRA adapter as a llama.cpp adapter GGUF (applied at run time on a base GGUF).

llama.cpp scales each adapter by alpha / rank, with one alpha per file. PEFT's scale can
differ per module (rank and alpha patterns) and follows alpha / sqrt(rank) under rsLoRA,
so we fold the difference into B: the product B·A·scale that llama.cpp computes is then
exactly the one PEFT trained.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from astra_tune.errors import ModelError
from astra_tune.export.convert import (
    arch_enum,
    architecture_of,
    load_config,
    permute_rows,
)

PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$"
)


def adapter_settings(adapter_dir: Path) -> dict[str, Any]:
    """adapter_config.json, with the checks that decide whether it fits llama.cpp."""
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise ModelError(f"no adapter_config.json in {adapter_dir}", where=str(adapter_dir))
    settings = json.loads(path.read_text(encoding="utf-8"))
    if settings.get("peft_type", "LORA") != "LORA":
        raise ModelError(
            f"{settings.get('peft_type')} adapters have no llama.cpp form", where=str(path)
        )
    if settings.get("use_dora"):
        raise ModelError(
            "DoRA adapters cannot run as llama.cpp adapters (they rescale whole weights)",
            where=str(path),
            fix="export without --adapter-only: the adapter is merged into the weights",
        )
    if settings.get("modules_to_save"):
        raise ModelError(
            f"the adapter also trains whole modules {settings['modules_to_save']}, which a "
            "llama.cpp adapter cannot carry",
            where=str(path),
            fix="export without --adapter-only: the adapter is merged into the weights",
        )
    if settings.get("bias", "none") != "none":
        raise ModelError(
            "the adapter trains biases, which a llama.cpp adapter cannot carry",
            where=str(path),
            fix="export without --adapter-only",
        )
    return settings


def write_adapter_gguf(
    adapter_dir: Path,
    base_dir: Path,
    out_path: Path,
    *,
    metadata: dict[str, Any],
) -> Path:
    """Convert `adapter_dir` (PEFT) into a llama.cpp LoRA GGUF for the base in `base_dir`."""
    import gguf
    from safetensors.numpy import load_file

    settings = adapter_settings(adapter_dir)
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise ModelError(f"no adapter_model.safetensors in {adapter_dir}", where=str(adapter_dir))
    config = load_config(base_dir)
    arch = architecture_of(config, base_dir)
    name_map = gguf.get_tensor_name_map(arch_enum(arch.gguf_arch), int(config["num_hidden_layers"]))
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)

    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in load_file(str(weights_path)).items():
        match = PEFT_KEY.match(key)
        if match is None:
            raise ModelError(
                f"adapter tensor {key} is not a LoRA A/B matrix",
                where=str(weights_path),
                fix="export without --adapter-only: the adapter is merged into the weights",
            )
        pairs.setdefault(match["module"], {})[match["ab"]] = value.astype(np.float32)

    alpha = float(settings.get("lora_alpha", 8))
    tensors: list[tuple[str, np.ndarray]] = []
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelError(
                f"adapter module {module} lacks its A or B matrix", where=str(weights_path)
            )
        base_name = name_map.get_name(module + ".weight", try_suffixes=(".weight",))
        if base_name is None or not base_name.endswith(".weight"):
            raise ModelError(
                f"adapter module {module} has no place in llama.cpp's {arch.gguf_arch} model",
                where=str(weights_path),
            )
        a, b = ab["A"], ab["B"]
        rank = a.shape[0]
        b = b * (_peft_scale(settings, module, rank) / (alpha / rank))
        if arch.permute_qk and module.endswith("q_proj"):
            b = permute_rows(b, n_head)
        elif arch.permute_qk and module.endswith("k_proj"):
            b = permute_rows(b, n_kv)
        tensors.append((base_name + ".lora_a", a))
        tensors.append((base_name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32)))

    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch.gguf_arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(metadata.get("name") or "adapter")
        if metadata.get("base_model"):
            writer.add_base_model_count(1)
            writer.add_base_model_name(0, str(metadata["base_model"]))
        writer.add_string("astra_tune.version", str(metadata.get("astra_version", "unknown")))
        for name, data in tensors:
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def _peft_scale(settings: dict[str, Any], module: str, rank: int) -> float:
    """The scale PEFT applies to this module's B·A (patterns and rsLoRA included)."""
    alpha = float(settings.get("lora_alpha", 8))
    for pattern, value in (settings.get("alpha_pattern") or {}).items():
        if re.search(rf"(^|\.){pattern}$", module):
            alpha = float(value)
    if settings.get("use_rslora"):
        return alpha / math.sqrt(rank)
    return alpha / rank
