"""Turn a model spec into a local Hugging Face directory, preparing it when needed.

A spec is one of (checked in this order):
  - an existing local path: an HF directory (with config.json), a `.gguf` file, a
    LoRA adapter directory, or a run directory (its model/ or adapter/);
  - a catalog name (`astra models list`);
  - a registry name `NAME[:TAG]` (`astra registry list`): its run's weights when that run
    is still here unchanged, else its most precise GGUF;
  - a Hugging Face hub id `org/name` (downloaded once into the HF cache).
GGUF files, bundled, local or registered, are dequantized once into `$ASTRA_HOME/models/`.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console

from astra_tune.errors import ModelError
from astra_tune.home import models_dir
from astra_tune.models.catalog import CATALOG, CatalogEntry, bundled_gguf_path, catalog_entry
from astra_tune.models.gguf_import import import_gguf, is_current, read_marker
from astra_tune.progress import progress_bar

if TYPE_CHECKING:
    from astra_tune.registry.store import ModelVersion

SpecKind = Literal["catalog", "hf_dir", "gguf", "registry", "hub"]
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Only what a causal LM needs; skips duplicate .bin/.pth/.gguf copies some repos carry.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]


@dataclass(frozen=True)
class ModelSpec:
    """What a spec names, before anything is prepared."""

    spec: str
    kind: SpecKind
    path: Path | None = None  # local directory or .gguf file
    entry: CatalogEntry | None = None
    hub_id: str | None = None
    version: ModelVersion | None = None  # registry specs: the version, pinned


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: `path` is a local HF directory."""

    spec: str
    kind: SpecKind
    path: Path
    gguf_path: Path | None = None  # the GGUF it was dequantized from, if any


def parse_spec(spec: str, *, base_dir: Path | None = None) -> ModelSpec:
    """Classify a spec without touching the network or preparing anything."""
    text = spec.strip()
    if not text:
        raise ModelError("empty model spec", fix=_spec_help())
    candidate = Path(text).expanduser()
    if not candidate.is_absolute() and base_dir is not None and (base_dir / candidate).exists():
        candidate = base_dir / candidate
    if candidate.exists():
        candidate = candidate.resolve()
        if candidate.is_file():
            if candidate.suffix.lower() != ".gguf":
                raise ModelError(
                    f"{candidate} is a file but not a .gguf model",
                    fix="pass a .gguf file or a Hugging Face model directory (with config.json)",
                )
            return ModelSpec(spec=text, kind="gguf", path=candidate)
        trained = _trained_output(candidate)
        if trained is not None:
            return ModelSpec(spec=text, kind="hf_dir", path=trained)
        if not (candidate / "config.json").is_file():
            raise ModelError(
                f"{candidate} is a directory without config.json, so not a Hugging Face model",
                fix="point at the directory that holds config.json and the *.safetensors files",
            )
        return ModelSpec(spec=text, kind="hf_dir", path=candidate)
    if text.lower().endswith(".gguf") or text.startswith((".", "/", "~")):
        raise ModelError(f"model file not found: {candidate}", fix="check the path")
    entry = catalog_entry(text)
    if entry is not None:
        return ModelSpec(spec=entry.name, kind="catalog", entry=entry)
    # Imported here: the registry pulls in SQLAlchemy, which most specs never need.
    from astra_tune.registry.store import find_version

    version = find_version(text)
    if version is not None:  # before hub ids: `team/assistant` may be either
        return ModelSpec(spec=version.reference, kind="registry", version=version)
    if HUB_ID.match(text):
        return ModelSpec(spec=text, kind="hub", hub_id=text)
    close = difflib.get_close_matches(text.lower(), [e.name for e in CATALOG], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ModelError(f"unknown model {text!r}", fix=hint + _spec_help())


def _trained_output(directory: Path) -> Path | None:
    """The weights of a training run: RUN/model, RUN/adapter, or an adapter dir itself."""
    if (directory / "config.json").is_file():
        return None
    if (directory / "adapter_config.json").is_file():
        return directory
    for child in ("model", "adapter"):
        if (directory / child / "config.json").is_file() or (
            directory / child / "adapter_config.json"
        ).is_file():
            return directory / child
    return None


def normalize_spec(spec: str, *, base_dir: Path | None = None) -> str:
    """The canonical form of a spec: absolute path for local models, else the spec."""
    parsed = parse_spec(spec, base_dir=base_dir)
    return str(parsed.path) if parsed.path is not None else parsed.spec


def resolve_model(
    spec: str, *, force: bool = False, console: Console | None = None, base_dir: Path | None = None
) -> ResolvedModel:
    """Resolve `spec` to a local HF directory, dequantizing or downloading it if needed."""
    parsed = parse_spec(spec, base_dir=base_dir)
    if parsed.kind == "hf_dir":
        assert parsed.path is not None
        return ResolvedModel(spec=parsed.spec, kind="hf_dir", path=parsed.path)
    if parsed.kind == "gguf":
        assert parsed.path is not None
        return _from_gguf(parsed, parsed.path, gguf_cache_dir(parsed.path), force, console)
    if parsed.kind == "registry":
        assert parsed.version is not None
        return _from_registry(parsed, parsed.version, force, console)
    if parsed.kind == "catalog":
        assert parsed.entry is not None
        if parsed.entry.source == "bundled":
            gguf = bundled_gguf_path(parsed.entry)
            return _from_gguf(parsed, gguf, catalog_cache_dir(parsed.entry), force, console)
        return _from_hub(parsed, parsed.entry.hub_id, force)
    assert parsed.hub_id is not None
    return _from_hub(parsed, parsed.hub_id, force)


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a model spec, without preparing its weights.

    Data preparation needs only the tokenizer; dequantizing a GGUF model for it took
    ~20 s of a 25 s `astra data prepare` on a fresh machine. A GGUF not yet prepared is
    read for its tokenizer alone (transformers builds the same one the import saves).
    """
    from transformers import AutoTokenizer

    from astra_tune.progress import quiet_hf_progress

    parsed = parse_spec(spec)
    gguf: Path | None = None
    if parsed.kind == "gguf":
        gguf = parsed.path
    elif parsed.kind == "catalog" and parsed.entry is not None and parsed.entry.source == "bundled":
        gguf = bundled_gguf_path(parsed.entry)
    if gguf is not None:
        prepared = (
            catalog_cache_dir(parsed.entry) if parsed.kind == "catalog" and parsed.entry
            else gguf_cache_dir(gguf)
        )  # fmt: skip
        with quiet_hf_progress():
            if is_current(prepared, gguf):
                return AutoTokenizer.from_pretrained(prepared)
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with quiet_hf_progress():
        return AutoTokenizer.from_pretrained(resolve_model(spec).path)


def catalog_cache_dir(entry: CatalogEntry) -> Path:
    """Where a bundled catalog model's dequantized copy lives."""
    return models_dir() / entry.name


def gguf_cache_dir(gguf_path: Path) -> Path:
    """Where a local .gguf file's dequantized copy lives (one per file path)."""
    import hashlib

    key = hashlib.sha256(str(gguf_path.resolve()).encode()).hexdigest()[:12]
    return models_dir() / "gguf" / f"{gguf_path.stem}-{key}"


def cached_path(entry: CatalogEntry) -> Path | None:
    """The local directory of a catalog model if it is already prepared, else None."""
    if entry.source == "bundled":
        directory = catalog_cache_dir(entry)
        return directory if read_marker(directory) is not None else None
    return _hub_snapshot(entry.hub_id, local_only=True)


def _from_gguf(
    parsed: ModelSpec, gguf: Path, target: Path, force: bool, console: Console | None
) -> ResolvedModel:
    if force or not is_current(target, gguf):
        with progress_bar(console=console) as progress:
            import_gguf(gguf, target, name=parsed.spec, progress=progress)
    return ResolvedModel(spec=parsed.spec, kind=parsed.kind, path=target, gguf_path=gguf)


def _from_registry(
    parsed: ModelSpec, version: ModelVersion, force: bool, console: Console | None
) -> ResolvedModel:
    import json

    from astra_tune.registry.store import Registry, weights_quantization

    # The run a version was pushed from holds its exact (unquantized) weights, but only
    # while it is the same run: a run directory trained again since must not stand in.
    run_dir = version.lineage.get("run_dir")
    if run_dir and Path(run_dir).is_dir():
        trained = _trained_output(Path(run_dir))
        lineage_file = Path(run_dir) / "lineage.json"  # RunLayout's name, which imports recipes
        if trained is not None and lineage_file.is_file():
            current = json.loads(lineage_file.read_text(encoding="utf-8"))
            if current == version.lineage.get("lineage"):
                return ResolvedModel(spec=parsed.spec, kind="registry", path=trained)
    if version.adapter is not None:
        where = f"its run {run_dir} is gone or trained again since" if run_dir else "no run"
        raise ModelError(
            f"{version.reference} is a LoRA adapter GGUF over a base GGUF, and {where}: "
            "its merged weights cannot be rebuilt from the adapter",
            fix="use a version exported with merged weights (astra export without "
            "--adapter-only), or the run directory itself",
        )
    checked = Registry().resolve(version.reference, verify=True)  # blobs match digests
    gguf = checked.models[weights_quantization(checked)]
    return _from_gguf(parsed, gguf, gguf_cache_dir(gguf), force, console)


def _from_hub(parsed: ModelSpec, hub_id: str, force: bool) -> ResolvedModel:
    path = None if force else _hub_snapshot(hub_id, local_only=True)
    if path is None:
        path = _hub_snapshot(hub_id, local_only=False, force=force)
    assert path is not None
    return ResolvedModel(spec=parsed.spec, kind=parsed.kind, path=path)


def hub_offline(variables: tuple[str, ...] = ("HF_HUB_OFFLINE",)) -> bool:
    """True when the user has switched the Hugging Face hub off (HF_HUB_OFFLINE)."""
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"} for name in variables
    )


def _hub_snapshot(hub_id: str, *, local_only: bool, force: bool = False) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    if local_only:
        try:
            return Path(
                snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, local_files_only=True)
            )
        except LocalEntryNotFoundError:
            return None  # not cached: the caller decides whether to download
    alternatives = (
        "use a local HF directory or .gguf file, or the bundled default "
        "`smollm2-135m-instruct`, which needs no network"
    )
    if hub_offline():
        raise ModelError(
            f"{hub_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
            fix=f"unset HF_HUB_OFFLINE (or set it to 0) and retry online, or {alternatives}",
        )
    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_PATTERNS, force_download=force))
    except GatedRepoError as exc:
        raise ModelError(
            f"{hub_id} is gated on the Hugging Face hub",
            where=f"https://huggingface.co/{hub_id}",
            fix="accept its licence on that page, then `hf auth login` (or set HF_TOKEN)",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"no model {hub_id!r} on the Hugging Face hub (or it is private)",
            where=f"https://huggingface.co/{hub_id}",
            fix="check the id; for a private model run `hf auth login` first",
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"cannot download {hub_id}: the Hugging Face hub is unreachable and it is not cached",
            where=f"https://huggingface.co/{hub_id}",
            fix=f"check the network connection, or set HF_HUB_OFFLINE=1 and {alternatives}",
        ) from exc
    except HfHubHTTPError as exc:
        raise ModelError(
            f"downloading {hub_id} failed: {exc}",
            where=f"https://huggingface.co/{hub_id}",
            fix="retry; if it persists, download it yourself and pass the local directory",
        ) from exc


def _spec_help() -> str:
    return (
        "pass a catalog name (`astra models list`), a local Hugging Face directory, "
        "a .gguf file, or a hub id like HuggingFaceTB/SmolLM2-360M-Instruct"
    )
