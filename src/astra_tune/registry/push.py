"""What a push stores, gathered from a run directory (its export) or a single GGUF file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from astra_tune.errors import ModelError
from astra_tune.registry.store import Layer, PushRequest


def request_for(source: Path, name: str) -> PushRequest:
    """What to push for a run directory (its export/) or a single .gguf file."""
    path = source.expanduser().resolve()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return request_from_gguf(path, name)
    if path.is_dir():
        return request_from_run(path, name)
    raise ModelError(
        f"{source} is neither a run directory nor a .gguf file",
        where=str(source),
        fix="pass a run directory after `astra export`, or a .gguf file",
    )


def gguf_facts(path: Path) -> dict[str, Any]:
    """Metadata of a GGUF that the registry and the server use (no tensor data read)."""
    from astra_tune.models.gguf_meta import read_metadata

    meta = read_metadata(path)
    arch = meta.get("general.architecture")
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token_text(key: str) -> str | None:
        index = meta.get(key)
        return tokens[int(index)] if index is not None and int(index) < len(tokens) else None

    stops = [t for t in (token_text("tokenizer.ggml.eot_token_id"),
                         token_text("tokenizer.ggml.eos_token_id")) if t]  # fmt: skip
    file_type = meta.get("general.file_type")
    return {
        "type": meta.get("general.type") or "model",
        "architecture": arch,
        "name": meta.get("general.name"),
        "size_label": meta.get("general.size_label"),
        "license": meta.get("general.license"),
        "base_model": meta.get("general.base_model.0.name"),
        "quantization": quantization_name(file_type) if file_type is not None else None,
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "block_count": meta.get(f"{arch}.block_count"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "stop": list(dict.fromkeys(stops)),
        "bos_token": token_text("tokenizer.ggml.bos_token_id") or "",
        "eos_token": token_text("tokenizer.ggml.eos_token_id") or "",
        "tensors": meta["__tensor_count__"],
        "parameters": meta["__parameters__"],
    }


def quantization_name(file_type: int) -> str:
    """llama.cpp's file type number as our lowercase name (15 -> q4_k_m)."""
    import gguf

    try:
        return (
            gguf.LlamaFileType(int(file_type))
            .name.removeprefix("MOSTLY_")
            .lower()
            .replace("all_", "")
        )
    except ValueError:
        return f"type{file_type}"


def request_from_gguf(path: Path, name: str) -> PushRequest:
    """One GGUF file as a version: the model, its template, stop tokens and license."""
    facts = gguf_facts(path)
    if facts["type"] == "adapter":
        raise ModelError(
            f"{path.name} is an adapter, not a model",
            where=str(path),
            fix="push the run directory, which holds the base GGUF and the adapter",
        )
    quant = facts["quantization"] or "gguf"
    layers = [Layer("model", path, {"org.astra.quantization": quant,
                                    "org.astra.filename": path.name})]  # fmt: skip
    layers += _text_layers(facts, system=None, license_text=facts["license"])
    lineage = {"source": {"file": str(path.resolve())}, "gguf": _public(facts)}
    layers.append(Layer("lineage", _json(lineage)))
    summary = {
        "source": "gguf",
        "architecture": facts["architecture"],
        "parameters": facts["parameters"],
        "quantizations": {quant: path.stat().st_size},
        "base_model": facts["base_model"],
    }
    return PushRequest(name, layers, ollama_config(facts, quant), summary)


def request_from_run(run_dir: Path, name: str, files: list[Path] | None = None) -> PushRequest:
    """A run's exported GGUFs (and adapter), template, stops, system prompt and lineage.

    `files`: exactly these GGUFs (what the last export wrote); default: all in RUN/export.
    """
    export = files[0].parent if files else run_dir / "export"
    if files is None:
        files = sorted(export.glob("*.gguf")) if export.is_dir() else []
    if not files:
        raise ModelError(
            f"{run_dir} has no exported GGUF files",
            where=str(export),
            fix=f"export it first: astra export {run_dir}",
        )
    facts = {path: gguf_facts(path) for path in files}
    models = {p: f for p, f in facts.items() if f["type"] != "adapter"}
    adapters = [p for p, f in facts.items() if f["type"] == "adapter"]
    if not models:
        raise ModelError(f"{export} holds only adapters, no model GGUF", where=str(export))
    layers: list[Layer] = []
    quantizations: dict[str, int] = {}
    for path, fact in models.items():
        quant = fact["quantization"] or "gguf"
        quantizations[quant] = path.stat().st_size
        layers.append(Layer("model", path, {"org.astra.quantization": quant,
                                            "org.astra.filename": path.name}))  # fmt: skip
    for path in adapters:
        layers.append(Layer("adapter", path, {"org.astra.filename": path.name}))
    first = next(iter(models.values()))
    recipe = _yaml(run_dir / "recipe.yaml")
    system = (recipe.get("data") or {}).get("system_prompt")
    layers += _text_layers(first, system=system, license_text=first["license"])
    lineage = _read_json(run_dir / "lineage.json")
    metrics = run_metrics(run_dir)
    verify = _read_json(export / "verify.json")
    lineage_layer = {
        "run_dir": str(run_dir.resolve()),
        "lineage": lineage,
        "recipe": recipe,
        "metrics": metrics,
        "evaluation": _read_json(run_dir / "eval" / "scores.json"),
        "verification": {
            f.get("file"): {k: f.get(k) for k in ("qtype", "top1", "kl_mean", "passed")}
            for f in verify.get("files", [])
        },
        "gguf": _public(first),
    }
    layers.append(Layer("lineage", _json(lineage_layer)))
    summary = {
        "source": "run",
        "architecture": first["architecture"],
        "parameters": first["parameters"],
        "quantizations": quantizations,
        "adapter": bool(adapters),
        "base_model": (lineage.get("base_model") or {}).get("spec") or first["base_model"],
        "method": lineage.get("method"),
        "data_sha256": (lineage.get("data") or {}).get("sha256", {}),
        "metrics": metrics,
    }
    return PushRequest(name, layers, ollama_config(first, next(iter(quantizations))), summary)


def run_metrics(run_dir: Path) -> dict[str, Any]:
    """Final train loss, final and best validation loss, and steps from metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    train: list[float] = []
    val: list[float] = []
    step = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        step = max(step, int(entry.get("step") or 0))
        if "loss" in entry:
            train.append(float(entry["loss"]))
        for key in ("val_loss", "eval_loss"):
            if key in entry:
                val.append(float(entry[key]))
                break
    result: dict[str, Any] = {"steps": step}
    if train:
        result["train_loss"] = train[-1]
    if val:
        result["val_loss"] = val[-1]
        result["best_val_loss"] = min(val)
    return result


def _text_layers(
    facts: dict[str, Any], *, system: str | None, license_text: str | None
) -> list[Layer]:
    layers = []
    if facts.get("chat_template"):
        layers.append(Layer("chat_template", facts["chat_template"].encode("utf-8")))
    params: dict[str, Any] = {}
    if facts.get("stop"):
        params["stop"] = facts["stop"]
    if params:
        layers.append(Layer("params", _json(params)))
    if system:
        layers.append(Layer("system", system.encode("utf-8")))
    if license_text:
        layers.append(Layer("license", str(license_text).encode("utf-8")))
    return layers


def ollama_config(facts: dict[str, Any], quant: str) -> dict[str, Any]:
    # Ollama's image config; /api/show and /api/tags read these fields.
    return {
        "model_format": "gguf",
        "model_family": facts.get("architecture"),
        "model_families": [facts.get("architecture")],
        "model_type": facts.get("size_label"),
        "file_type": quant.upper(),
        "architecture": "amd64",
        "os": "linux",
    }


def _public(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if k != "chat_template"}


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path.name} is not valid JSON: {exc}", where=str(path)) from exc


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}
