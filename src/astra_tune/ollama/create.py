"""Custom models without training: a Modelfile over a GGUF or a registry model, registered.

The guide's "Method 1" (a system prompt and parameters over an existing model) and
"Method 2" (a downloaded GGUF with its template) both end here: the Modelfile's FROM is
resolved, its TEMPLATE (or the one derived from the model's Jinja template) checked, and
the result stored in the registry as a new version that `astra serve` serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from astra_tune.errors import ModelError
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.modelfile import Modelfile, ModelfileError
from astra_tune.ollama.render import GoChatTemplate
from astra_tune.ollama.translate import JinjaChat, Translation, TranslationError, prove, translate


@dataclass
class TemplateChoice:
    """The TEMPLATE an Ollama Modelfile gets, where it came from, and any caveat."""

    template: str | None
    stops: list[str]
    source: str  # "given" | "translated" | "none"
    notes: list[str] = field(default_factory=list)


@lru_cache(maxsize=64)
def _translated(chat_template: str, bos: str, eos: str) -> Translation:
    return translate(chat_template, bos_token=bos, eos_token=eos)


def translated_template(chat_template: str, bos: str = "", eos: str = "") -> Translation:
    """`translate`, cached: the same Jinja template is translated once per process."""
    return _translated(chat_template, bos, eos)


def ollama_template(
    chat_template: str | None, bos: str, eos: str, given: str | None = None
) -> TemplateChoice:
    """A hand-written TEMPLATE (checked against the Jinja one when there is one), else ours."""
    if given is not None:
        try:
            GoChatTemplate(given)
        except TemplateError as exc:
            raise ModelfileError(
                f"the TEMPLATE does not parse: {exc.what}", where=exc.where
            ) from exc
        notes = []
        if chat_template:
            chat = JinjaChat(chat_template, bos, eos)
            differ = [c.name for c in prove(chat, given) if not c.same]
            if differ:
                notes.append(
                    f"the given TEMPLATE renders {len(differ)} probe conversations differently "
                    f"from the model's own chat template ({', '.join(differ)})"
                )
        stops = _stops_of(chat_template, bos, eos)
        return TemplateChoice(given, stops, "given", notes)
    if not chat_template:
        note = "the model has no chat template; prompts are passed as written"
        return TemplateChoice(None, [eos] if eos else [], "none", [note])
    try:
        translation = translated_template(chat_template, bos, eos)
    except TranslationError as exc:
        return TemplateChoice(None, [eos] if eos else [], "none",
                              [f"no TEMPLATE: {exc.what} ({exc.fix})"])  # fmt: skip
    return TemplateChoice(translation.template, translation.stops, "translated", translation.notes)


def _stops_of(chat_template: str | None, bos: str, eos: str) -> list[str]:
    if chat_template:
        try:
            return translated_template(chat_template, bos, eos).stops
        except TranslationError:
            pass  # falls back to the eos token, the one stop every model has
    return [eos] if eos else []


def modelfile_for_gguf(
    gguf: Path,
    *,
    from_text: str,
    adapter_text: str | None = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    license_text: str | None = None,
    given_template: str | None = None,
) -> tuple[Modelfile, TemplateChoice]:
    """The Modelfile for a GGUF: FROM, ADAPTER, TEMPLATE, PARAMETER stop, SYSTEM, LICENSE."""
    from astra_tune.models.gguf_meta import gguf_facts

    facts = gguf_facts(gguf)
    choice = ollama_template(
        facts["chat_template"], facts["bos_token"], facts["eos_token"], given_template
    )
    params: dict[str, Any] = {"stop": choice.stops or facts["stop"]}
    params.update(parameters or {})
    if not params["stop"]:
        del params["stop"]
    license_text = license_text if license_text is not None else facts["license"]
    modelfile = Modelfile(
        from_=from_text,
        adapters=[adapter_text] if adapter_text else [],
        template=choice.template,
        system=system,
        parameters=params,
        license=[license_text] if license_text else [],
    )
    return modelfile, choice


def write_modelfile(
    directory: Path,
    gguf: Path,
    *,
    adapter: Path | None = None,
    system: str | None = None,
    parameters: dict[str, Any] | None = None,
    license_text: str | None = None,
    given_template: str | None = None,
    header: str | None = None,
) -> tuple[Path, TemplateChoice]:
    """`directory/Modelfile` for files in that directory (FROM ./FILE), written atomically."""
    from astra_tune.atomic import write_text

    modelfile, choice = modelfile_for_gguf(
        gguf,
        from_text=f"./{gguf.name}",
        adapter_text=f"./{adapter.name}" if adapter else None,
        system=system,
        parameters=parameters,
        license_text=license_text,
        given_template=given_template,
    )
    notes = "\n".join(choice.notes)
    path = directory / "Modelfile"
    write_text(path, modelfile.text("\n".join(x for x in (header, notes) if x)))
    return path, choice


@dataclass(frozen=True)
class Created:
    """A registered custom model and any caveats about its TEMPLATE."""

    pushed: Any  # registry.store.Pushed
    notes: list[str]


@dataclass
class Base:
    """What a Modelfile's FROM names, resolved: files and the defaults that come with them."""

    gguf: Path
    adapter: Path | None
    chat_template: str | None
    template: str | None
    params: dict[str, Any]
    system: str | None
    license: str | None
    description: str


def resolve_from(from_: str, base_dir: Path, registry: Any, where: str) -> Base:
    """FROM as a GGUF path (relative to the Modelfile) or a registry model NAME[:TAG]."""
    from astra_tune.models.gguf_meta import gguf_facts
    from astra_tune.registry.store import RegistryError, pick_quantization

    path = (base_dir / Path(from_).expanduser()).resolve()
    if from_.lower().endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise ModelError(f"FROM {from_}: no such file", where=where, fix="check the path")
        facts = gguf_facts(path)
        if facts["type"] == "adapter":
            raise ModelError(
                f"FROM {from_} is a LoRA adapter, not a model",
                where=where,
                fix="put the base model in FROM and the adapter in ADAPTER",
            )
        return Base(path, None, facts["chat_template"], None, {"stop": facts["stop"]},
                    None, facts["license"], str(path))  # fmt: skip
    try:
        version = registry.resolve(from_)
    except RegistryError as exc:
        raise ModelError(
            f"FROM {from_}: not a GGUF file and not a registry model ({exc.what})",
            where=where,
            fix="name a .gguf file, or a model from `astra registry list`; to use a trained "
            "run or a Hugging Face model, `astra export` it first",
        ) from exc
    quant = pick_quantization(version, None)
    return Base(
        gguf=version.models[quant],
        adapter=version.adapter,
        chat_template=version.chat_template,
        template=version.template,
        params=dict(version.params),
        system=version.system,
        license=version.license,
        description=version.reference,
    )


def create_model(
    registry: Any,
    modelfile: Modelfile,
    name: str,
    *,
    base_dir: Path,
    text: str,
    where: str = "Modelfile",
) -> Created:
    """Register the model a Modelfile describes."""
    from astra_tune.models.gguf_meta import check_adapter_file, gguf_facts
    from astra_tune.registry.layers import adapter_layer, model_layer, ollama_config, version_layers
    from astra_tune.registry.names import validate_name
    from astra_tune.registry.store import PushRequest

    validate_name(name)
    if modelfile.messages:
        raise ModelfileError(
            "MESSAGE (a seed conversation) is not stored by this registry",
            where=where,
            fix="put the behaviour in SYSTEM instead",
        )
    if len(modelfile.adapters) > 1:
        raise ModelfileError(
            "more than one ADAPTER: the server applies one LoRA adapter per model",
            where=where,
            fix="merge the adapters first, or keep one",
        )
    base = resolve_from(modelfile.from_, base_dir, registry, f"{where}: FROM")
    adapter = base.adapter
    if modelfile.adapters:
        adapter = (base_dir / Path(modelfile.adapters[0]).expanduser()).resolve()
        if not adapter.is_file():
            raise ModelError(
                f"ADAPTER {modelfile.adapters[0]}: no such file", where=f"{where}: ADAPTER"
            )
        check_adapter_file(adapter, base.gguf)
    facts = gguf_facts(base.gguf)
    template = modelfile.template if modelfile.template is not None else base.template
    notes: list[str] = []
    if template is not None:
        bos, eos = facts["bos_token"], facts["eos_token"]
        notes += ollama_template(base.chat_template, bos, eos, template).notes
        # A TEMPLATE equal to the one derived from the Jinja template adds nothing; only a
        # hand-written one is stored, and the server then renders prompts with it.
        if ollama_template(base.chat_template, bos, eos).template == template:
            template = None
    quant = (facts["quantization"] or "gguf").lower()
    params = {**base.params, **modelfile.parameters}
    if "stop" in modelfile.parameters:
        params["stop"] = list(dict.fromkeys(modelfile.parameters["stop"]))
    layers = version_layers(
        models=[model_layer(base.gguf, quant)],
        adapter=adapter_layer(adapter) if adapter is not None else None,
        chat_template=base.chat_template,
        template=template,
        params=params,
        system=modelfile.system if modelfile.system is not None else base.system,
        license_text="\n".join(modelfile.license) if modelfile.license else base.license,
        lineage={"created_by": "modelfile", "from": base.description, "modelfile": text},
    )
    summary = {
        "source": f"Modelfile over {base.description}",
        "architecture": facts["architecture"],
        "parameters": facts["parameters"],
        "quantizations": {quant: base.gguf.stat().st_size},
        "base_model": base.description,
    }
    pushed = registry.push(PushRequest(name, layers, ollama_config(facts, quant), summary))
    return Created(pushed, notes)
