"""Which model names the server answers to, and the files and defaults behind each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astra_tune.errors import ConfigError, ModelError
from astra_tune.serve.settings import UpstreamSettings


class ModelNotServedError(ModelError):
    """A request names a model this server does not serve."""


@dataclass(frozen=True)
class ServedModel:
    """One name clients can ask for: a GGUF (plus adapter), its template, stops, defaults."""

    name: str  # as clients send it, e.g. "orrery:latest" or "tiny-f16"
    version: str  # registry version, "file" for a GGUF on the command line, or "upstream"
    gguf: Path | None  # None for models forwarded to an upstream server
    adapter: Path | None
    chat_template: str | None
    bos_token: str
    eos_token: str
    stop: list[str]
    system: str | None
    params: dict[str, Any] = field(default_factory=dict)
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    digest: str | None = None
    modified_at: str | None = None
    license: str | None = None
    upstream: UpstreamSettings | None = None
    # An Ollama TEMPLATE written by hand (Modelfile or /api/create); when set, prompts are
    # rendered with it, as Ollama would, instead of with the Jinja chat template.
    go_template: str | None = None

    @property
    def base_name(self) -> str:
        return self.name.split(":")[0]

    @property
    def engine_key(self) -> str:
        """What a loaded engine is kept under: the version, not the alias that found it.

        Keying by the requested name would keep serving the old weights under an alias
        after it moves; keying by version lets `orrery:production` and `orrery:1.1.0`
        share one engine.
        """
        if self.version in ("file", "upstream"):
            return self.name
        return f"{self.base_name}:{self.version}"


class Catalog:
    """Served names -> ServedModel; `name` alone means `name:latest`, as in Ollama."""

    def __init__(self, models: list[ServedModel]) -> None:
        self._by_name: dict[str, ServedModel] = {}
        for model in models:
            self._by_name[model.name] = model

    def get(self, name: str) -> ServedModel:
        model = self._by_name.get(name) or self._by_name.get(f"{name}:latest")
        if model is None:
            raise ModelNotServedError(
                f"model {name!r} is not served here",
                fix=f"choose one of: {', '.join(sorted(self._by_name)) or '(none)'}",
            )
        return model

    def all(self) -> list[ServedModel]:
        return sorted(self._by_name.values(), key=lambda m: m.name)

    def add(self, model: ServedModel) -> None:
        self._by_name[model.name] = model

    def remove(self, name: str) -> None:
        self._by_name.pop(name, None)

    def from_registry(self) -> list[ServedModel]:
        """The entries that come from the registry (not files on the command line, not
        upstream servers)."""
        return [m for m in self.all() if m.version not in ("file", "upstream")]


def build_catalog(
    specs: list[str], registry: Any | None, upstreams: list[UpstreamSettings] | None = None
) -> Catalog:
    """Registry references, GGUF files and upstream servers -> a catalog.

    With no `specs` (and no upstreams), every registry version and alias is served.
    """
    models: list[ServedModel] = [from_upstream(u) for u in upstreams or []]
    references: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if spec.lower().endswith(".gguf"):
            if not path.is_file():
                raise ConfigError(
                    f"model file not found: {spec}", where="--model", fix="check the path"
                )
            models.append(from_gguf(path.resolve()))
        else:
            references.append(spec)
    if registry is not None:
        if not specs and not upstreams:
            references = registry_references(registry)
        for reference in references:
            models.append(from_registry(registry, reference))
    elif references:
        raise ConfigError("registry references need the registry", where="--model")
    return Catalog(models)


def registry_references(registry: Any) -> list[str]:
    """Every `name:version` and `name:alias` the registry holds."""
    versions = registry.list_versions()
    return sorted(
        {f"{v['name']}:{alias}" for v in versions for alias in v["aliases"]}
        | {f"{v['name']}:{v['version']}" for v in versions}
    )


def from_upstream(upstream: UpstreamSettings) -> ServedModel:
    name = upstream.name if ":" in upstream.name else f"{upstream.name}:latest"
    return ServedModel(
        name=name,
        version="upstream",
        gguf=None,
        adapter=None,
        chat_template=None,
        bos_token="",
        eos_token="",
        stop=[],
        system=None,
        family="upstream",
        upstream=upstream,
    )


def from_gguf(path: Path, name: str | None = None) -> ServedModel:
    from astra_tune.models.gguf_meta import gguf_facts

    facts = gguf_facts(path)
    return ServedModel(
        name=name or f"{path.stem}:latest",
        version="file",
        gguf=path,
        adapter=None,
        chat_template=facts["chat_template"],
        bos_token=facts["bos_token"],
        eos_token=facts["eos_token"],
        stop=facts["stop"],
        system=None,
        family=facts["architecture"],
        parameter_size=facts["size_label"],
        quantization=(facts["quantization"] or "").upper() or None,
        license=facts["license"],
    )


def from_registry(registry: Any, reference: str) -> ServedModel:
    from astra_tune.registry.store import pick_quantization

    version = registry.resolve(reference)
    quant = pick_quantization(version, None)
    gguf = version.models[quant]
    base = from_gguf(gguf)
    name = reference if ":" in reference else f"{reference}:latest"
    return ServedModel(
        name=name,
        version=version.version,
        gguf=gguf,
        adapter=version.adapter,
        chat_template=version.chat_template or base.chat_template,
        bos_token=base.bos_token,
        eos_token=base.eos_token,
        stop=list(version.params.get("stop") or base.stop),
        system=version.system,
        params={k: v for k, v in version.params.items() if k != "stop"},
        family=base.family,
        parameter_size=base.parameter_size,
        quantization=quant.upper(),
        digest=version.manifest_digest,
        modified_at=version.created_at,
        license=version.license,
        go_template=version.template,
    )
