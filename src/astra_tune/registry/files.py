"""A registry version copied out as plain files, with a Modelfile for Ollama."""

from __future__ import annotations

from pathlib import Path

from astra_tune.errors import ConfigError
from astra_tune.registry.blobs import LocalBlobStore
from astra_tune.registry.store import ModelVersion, Registry

# Which file `FROM` names when several quantizations exist and none is asked for.
PREFERRED = ("q4_k_m", "q5_k_m", "q8_0", "q6_k", "f16", "bf16", "f32")


def export_version(
    registry: Registry, reference: str, directory: Path, *, quant: str | None = None
) -> list[Path]:
    """Write the version's GGUFs (and adapter) and a Modelfile into `directory`."""
    version = registry.resolve(reference)
    chosen = pick_quantization(version, quant)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    names: dict[str, str] = {}
    for layer in version.manifest["layers"]:
        notes = layer.get("annotations", {})
        filename = notes.get("org.astra.filename")
        if not filename:
            continue
        target = directory / Path(filename).name
        store = registry.blobs
        assert isinstance(store, LocalBlobStore)
        store.copy_to(layer["digest"], target)
        written.append(target)
        names[notes.get("org.astra.quantization") or "adapter"] = target.name
    from astra_tune.ollama.create import write_modelfile

    adapter = directory / names["adapter"] if "adapter" in names else None
    path, _ = write_modelfile(
        directory,
        directory / names[chosen],
        adapter=adapter,
        system=version.system,
        parameters=dict(version.params),
        license_text=version.license,
        given_template=version.template,
        header=f"{version.reference} from the Astra Tune registry",
    )
    written.append(path)
    return written


def pick_quantization(version: ModelVersion, quant: str | None) -> str:
    """The quantization to serve: the one asked for, else the first of PREFERRED present."""
    if quant is not None:
        if quant not in version.models:
            raise ConfigError(
                f"{version.reference} has no {quant} file",
                where="--quant",
                fix=f"choose one of {', '.join(version.models)}",
            )
        return quant
    for candidate in PREFERRED:
        if candidate in version.models:
            return candidate
    return next(iter(version.models))
