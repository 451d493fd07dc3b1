"""A registry version copied out as plain files, with a Modelfile for Ollama."""

from __future__ import annotations

from pathlib import Path

from astra_tune.ollama.create import write_modelfile
from astra_tune.registry.blobs import LocalBlobStore
from astra_tune.registry.layers import FILENAME, QUANTIZATION, annotation
from astra_tune.registry.store import Registry, pick_quantization


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
        filename = annotation(layer, FILENAME)
        if not filename:
            continue
        target = directory / Path(filename).name
        store = registry.blobs
        assert isinstance(store, LocalBlobStore)
        store.copy_to(layer["digest"], target)
        written.append(target)
        names[annotation(layer, QUANTIZATION) or "adapter"] = target.name
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
