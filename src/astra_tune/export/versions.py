"""A run's export, an export directory or a single GGUF file as a registry version: what
a push stores (layers, lineage, summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from astra_tune.errors import ModelError
from astra_tune.models.gguf_meta import gguf_facts
from astra_tune.registry.layers import adapter_layer, model_layer, ollama_config, version_layers
from astra_tune.registry.store import PushRequest
from astra_tune.runs import RunLayout


def request_for(source: Path, name: str) -> PushRequest:
    """What to push for a run directory (its export/) or a single .gguf file."""
    path = source.expanduser().resolve()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return request_from_gguf(path, name)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs and not (path / "lineage.json").is_file():
            # An export directory (`astra export RUN -o DIR`): its files, and the lineage
            # of the run it was exported from when verify.json names one.
            return request_from_run(_run_of_export(path) or path, name, ggufs)
        return request_from_run(path, name)
    raise ModelError(
        f"{source} is neither a run directory nor a .gguf file",
        where=str(source),
        fix="pass a run directory after `astra export`, an export directory, or a .gguf file",
    )


def _run_of_export(export_dir: Path) -> Path | None:
    """The run an export directory came from, as its verify.json records it."""
    source = _read_json(export_dir / "verify.json").get("source")
    if not source:
        return None
    run = Path(str(source)).expanduser()
    for candidate in (run, run.parent):  # the run, or its adapter/ or model/
        if (candidate / "lineage.json").is_file():
            return candidate.resolve()
    return None


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
    layers = version_layers(
        models=[model_layer(path, quant)],
        chat_template=facts["chat_template"],
        params={"stop": facts["stop"]} if facts["stop"] else None,
        license_text=facts["license"],
        lineage={"source": {"file": str(path.resolve())}, "gguf": _public(facts)},
    )
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

    `files`: exactly these GGUFs (what the last export wrote); default: all in the run's
    export directory (export.output_dir, else RUN/export).
    """
    layout = RunLayout.at(run_dir)
    export = files[0].parent if files else layout.export_dir
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
    if len(adapters) > 1:
        raise ModelError(
            f"{export} holds {len(adapters)} adapter GGUFs; a version carries one",
            where=str(export),
            fix="export again into an empty directory",
        )
    quantizations: dict[str, int] = {}
    model_layers = []
    for path, fact in models.items():
        quant = fact["quantization"] or "gguf"
        quantizations[quant] = path.stat().st_size
        model_layers.append(model_layer(path, quant))
    first = next(iter(models.values()))
    recipe = _yaml(layout.recipe_file)
    lineage = _read_json(layout.lineage_file)
    metrics = run_metrics(layout.metrics_file)
    verify = _read_json(export / "verify.json")
    lineage_layer = {
        "run_dir": str(run_dir.resolve()),
        "lineage": lineage,
        "recipe": recipe,
        "metrics": metrics,
        "evaluation": _read_json(layout.eval_dir / "scores.json"),
        "verification": {
            f.get("file"): {k: f.get(k) for k in ("qtype", "top1", "kl_mean", "passed")}
            for f in verify.get("files", [])
        },
        "gguf": _public(first),
    }
    layers = version_layers(
        models=model_layers,
        adapter=adapter_layer(adapters[0]) if adapters else None,
        chat_template=first["chat_template"],
        params={"stop": first["stop"]} if first["stop"] else None,
        system=(recipe.get("data") or {}).get("system_prompt"),
        license_text=first["license"],
        lineage=lineage_layer,
    )
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


def run_metrics(path: Path) -> dict[str, Any]:
    """Final train loss, final and best validation loss, and steps from a metrics.jsonl."""
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


def _public(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if k != "chat_template"}


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
