"""The layers a registry version is made of: media types, annotation keys, serialization.

Every push builds its layers here, whatever it comes from (a run's export, one GGUF, a
Modelfile, Ollama's /api/create and /api/copy), so equal content always gives equal bytes
and so an equal digest: two versions with the same PARAMETERs share one params blob.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ollama's media types where Ollama has one, so a manifest reads like Ollama's own.
MEDIA_TYPES = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "model": "application/vnd.ollama.image.model",
    "adapter": "application/vnd.ollama.image.adapter",
    "params": "application/vnd.ollama.image.params",
    "system": "application/vnd.ollama.image.system",
    "license": "application/vnd.ollama.image.license",
    "template": "application/vnd.ollama.image.template",  # Go template, for Ollama
    "chat_template": "application/vnd.astra.chat-template.jinja",  # the HF Jinja original
    "lineage": "application/vnd.astra.lineage+json",
}
KIND_OF = {media: kind for kind, media in MEDIA_TYPES.items()}

# Annotations on file layers: which quantization a model GGUF is, and its file name.
QUANTIZATION = "org.astra.quantization"
FILENAME = "org.astra.filename"


@dataclass
class Layer:
    """Something to store in a version: a file or bytes, its kind and annotations."""

    kind: str
    source: Path | bytes
    annotations: dict[str, str] = field(default_factory=dict)


def json_bytes(value: Any) -> bytes:
    """The one JSON serialization of registry documents (sorted keys: stable digests)."""
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def model_layer(path: Path, quantization: str | None, filename: str | None = None) -> Layer:
    """A model GGUF; `quantization` as llama.cpp names it, lowercase (q4_k_m, f16)."""
    notes = {QUANTIZATION: (quantization or "gguf").lower(), FILENAME: filename or path.name}
    return Layer("model", path, notes)


def adapter_layer(path: Path, filename: str | None = None) -> Layer:
    """A LoRA adapter GGUF that llama.cpp applies over the model."""
    return Layer("adapter", path, {FILENAME: filename or path.name})


def version_layers(
    *,
    models: list[Layer],
    adapter: Layer | None = None,
    chat_template: str | None = None,
    template: str | None = None,
    params: dict[str, Any] | None = None,
    system: str | None = None,
    license_text: str | None = None,
    lineage: dict[str, Any] | None = None,
) -> list[Layer]:
    """A version's layers in the one order every push uses; empty values are left out."""
    layers = [*models, *([adapter] if adapter is not None else [])]
    if chat_template:
        layers.append(Layer("chat_template", chat_template.encode("utf-8")))
    if template is not None:  # an empty TEMPLATE is Ollama's "no template": kept
        layers.append(Layer("template", template.encode("utf-8")))
    if params:
        layers.append(Layer("params", json_bytes(params)))
    if system:
        layers.append(Layer("system", system.encode("utf-8")))
    if license_text:
        layers.append(Layer("license", license_text.encode("utf-8")))
    if lineage is not None:
        layers.append(Layer("lineage", json_bytes(lineage)))
    return layers


def annotation(layer: dict[str, Any], key: str) -> str | None:
    """An annotation of a manifest's layer descriptor, if it has it."""
    value = (layer.get("annotations") or {}).get(key)
    return str(value) if value is not None else None


def ollama_config(facts: dict[str, Any], quant: str) -> dict[str, Any]:
    """A manifest's config blob, as Ollama writes it (/api/show and /api/tags read it),
    from a GGUF's facts (`gguf_facts`)."""
    return {
        "model_format": "gguf",
        "model_family": facts.get("architecture"),
        "model_families": [facts.get("architecture")],
        "model_type": facts.get("size_label"),
        "file_type": quant.upper(),
        "architecture": "amd64",
        "os": "linux",
    }
