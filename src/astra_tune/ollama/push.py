"""Send a registry model to an Ollama server: blobs, create, and a check with show."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from astra_tune.errors import AstraError
from astra_tune.ollama.create import ollama_template
from astra_tune.ollama.translate import HAND_WRITTEN
from astra_tune.registry.layers import FILENAME, annotation

DEFAULT_HOST = "http://127.0.0.1:11434"


class PushError(AstraError):
    """The Ollama server refused the model, or holds something other than what we sent."""


@dataclass
class PushResult:
    """What was sent to Ollama and what it reports back."""

    host: str
    model: str
    uploaded: list[str] = field(default_factory=list)  # blob digests sent
    skipped: list[str] = field(default_factory=list)  # blobs the server already had
    statuses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def ollama_host(host: str | None) -> str:
    """--host, else OLLAMA_HOST (as the ollama CLI reads it), else Ollama's default."""
    value = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    return value if "://" in value else f"http://{value}"


def push_to_ollama(
    registry: Any,
    reference: str,
    *,
    host: str | None = None,
    target: str | None = None,
    template_file: Path | None = None,
    on_status: Callable[[str, int | None, int | None], None] | None = None,
) -> PushResult:
    """Upload a registry version's GGUF (and adapter) and create it on an Ollama server."""
    import ollama

    from astra_tune.digests import file_sha256
    from astra_tune.models.gguf_meta import gguf_facts
    from astra_tune.registry.store import pick_quantization

    version = registry.resolve(reference)
    gguf = version.models[pick_quantization(version, None)]
    facts = gguf_facts(gguf)
    given = template_file.read_text(encoding="utf-8") if template_file else version.template
    choice = ollama_template(version.chat_template, facts["bos_token"], facts["eos_token"], given)
    if choice.template is None and version.chat_template:
        raise PushError(
            f"{version.reference}'s chat template has no faithful Ollama TEMPLATE: "
            + "; ".join(choice.notes),
            fix=HAND_WRITTEN,
        )
    url = ollama_host(host)
    name = target or f"{version.name}:{version.version}"
    result = PushResult(host=url, model=name, notes=list(choice.notes))
    client = ollama.Client(host=url)
    blobs: dict[str, dict[str, str]] = {"files": {}, "adapters": {}}
    filenames = {
        layer["digest"]: annotation(layer, FILENAME) for layer in version.manifest["layers"]
    }
    paths = [("files", gguf)] + ([("adapters", version.adapter)] if version.adapter else [])
    for kind, path in paths:
        digest = "sha256:" + file_sha256(path)
        filename = filenames.get(digest) or f"{version.name}-{kind}.gguf"
        if _has_blob(url, digest):
            result.skipped.append(digest)
        else:
            if on_status:
                on_status(f"uploading {filename}", 0, path.stat().st_size)
            try:
                client.create_blob(path)
            except (ollama.ResponseError, httpx.HTTPError) as exc:
                raise _failed(url, f"uploading {filename}", exc) from exc
            result.uploaded.append(digest)
        blobs[kind][filename] = digest
    params = dict(version.params)
    if choice.stops and "stop" not in params:
        params["stop"] = choice.stops
    request: dict[str, Any] = {
        "model": name,
        "files": blobs["files"],
        "adapters": blobs["adapters"] or None,
        "template": choice.template,
        "system": version.system,
        "parameters": params or None,
        "license": version.license,
    }
    try:
        for update in client.create(**request, stream=True):
            result.statuses.append(update.status or "")
            if on_status:
                on_status(update.status or "", update.completed, update.total)
        shown = client.show(name)
    except (ollama.ResponseError, httpx.HTTPError) as exc:
        raise _failed(url, f"creating {name}", exc) from exc
    _check(shown, choice.template, version.system, params.get("stop") or [], name, url)
    return result


def _has_blob(url: str, digest: str) -> bool:
    # Ollama's documented HEAD /api/blobs/:digest; the client library has no call for it.
    try:
        return httpx.head(f"{url}/api/blobs/{digest}", timeout=30).status_code == 200
    except httpx.HTTPError as exc:
        raise _failed(url, "checking blobs", exc) from exc


def _failed(url: str, doing: str, exc: Exception) -> PushError:
    detail = getattr(exc, "error", None) or str(exc)
    return PushError(
        f"Ollama at {url} failed while {doing}: {detail}",
        where=url,
        fix="check that the server is running (ollama serve) and --host / OLLAMA_HOST",
    )


def _check(
    shown: Any, template: str | None, system: str | None, stops: list[str], name: str, url: str
) -> None:
    """The server must now hold what we sent: TEMPLATE, SYSTEM and every stop."""
    problems = []
    if template is not None and (shown.template or "") != template:
        problems.append("its TEMPLATE differs from the one sent")
    # The client's ShowResponse has no `system` field; the Modelfile Ollama shows has it,
    # quoted as Ollama likes (bare, "…" or """…"""), so look for the text itself.
    if system and system not in (shown.modelfile or ""):
        problems.append("its SYSTEM differs from the one sent")
    parameters = shown.parameters or ""
    missing = [s for s in stops if s not in parameters]
    if missing:
        problems.append(f"stop {missing[0]!r} is missing from its parameters")
    if problems:
        raise PushError(
            f"{name} was created on {url} but " + "; ".join(problems),
            where=f"{url}/api/show",
            fix="the server may rewrite models on create; compare `ollama show --modelfile`",
        )
