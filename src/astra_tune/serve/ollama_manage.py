"""Ollama's model management routes: blobs, create, copy, delete, stored in the registry."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from astra_tune.errors import ModelError
from astra_tune.export.quantize import quantize, unquantizable
from astra_tune.models.gguf_meta import check_adapter_file, gguf_facts
from astra_tune.models.gguf_types import LLAMA_TYPES
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.render import GoChatTemplate
from astra_tune.registry.layers import (
    FILENAME,
    QUANTIZATION,
    Layer,
    adapter_layer,
    model_layer,
    ollama_config,
    version_layers,
)
from astra_tune.registry.names import parse_reference
from astra_tune.registry.store import PushRequest, Registry
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.errors import BadRequestError
from astra_tune.serve.state import get_state
from astra_tune.serve.wire import (
    DIGEST_PATTERN,
    CopyRequest,
    CreateRequest,
    DeleteRequest,
    StatusResponse,
)

router = APIRouter()


@router.head("/blobs/{digest}")
async def blob_exists(request: Request, digest: str) -> Response:
    registry = get_state(request).require_registry()
    return Response(status_code=200 if registry.blobs.exists(_digest(digest)) else 404)


@router.post("/blobs/{digest}")
async def blob_upload(request: Request, digest: str) -> Response:
    registry = get_state(request).require_registry()
    wanted = _digest(digest)
    incoming = registry.root / f".upload-{uuid.uuid4().hex}"
    try:
        with incoming.open("wb") as handle:
            async for chunk in request.stream():
                handle.write(chunk)
        stored = await run_in_threadpool(registry.blobs.put_file, incoming)
    finally:
        incoming.unlink(missing_ok=True)
    if stored != wanted:
        raise BadRequestError(
            f"the uploaded bytes hash to {stored}, not {wanted}", where="/api/blobs",
            fix="upload the file whose sha256 is in the URL",
        )  # fmt: skip
    return Response(status_code=201)


@router.post("/create", response_model=StatusResponse)
async def create(body: CreateRequest, request: Request) -> Any:
    state = get_state(request)
    registry = state.require_registry()
    ref = parse_reference(body.target)
    base = state.catalog.get(body.from_) if body.from_ else None
    if base is not None and base.gguf is None:
        raise BadRequestError(f"{base.name} is forwarded upstream; there is no file to copy")
    models, adapter = _uploaded(registry, body, base)
    quantized: Path | None = None
    if body.quantize:
        quantized = await _quantized(registry, models[0], body.quantize.lower())
        models = [model_layer(quantized, body.quantize)]
    try:
        push = await run_in_threadpool(_create_request, ref.name, body, base, models, adapter)
        pushed = await run_in_threadpool(
            registry.push, push, version=ref.tag if ref.is_version else None
        )
    finally:
        if quantized is not None:
            quantized.unlink(missing_ok=True)  # the registry holds its own copy now
    if not ref.is_version and ref.tag != "latest":
        await run_in_threadpool(registry.tag, f"{ref.name}:{pushed.version}", ref.tag)
    state.refresh(ref.name)
    statuses = [StatusResponse(status="writing manifest"), StatusResponse(status="success")]
    if body.stream is not False:
        return _ndjson(statuses)
    return statuses[-1]


@router.post("/copy")
async def copy(body: CopyRequest, request: Request) -> Response:
    state = get_state(request)
    registry = state.require_registry()
    source = state.catalog.get(body.source)
    if source.gguf is None:
        raise BadRequestError(f"{source.name} is forwarded upstream; there is no file to copy")
    target = parse_reference(body.destination)
    quant = (source.quantization or "gguf").lower()
    layers = version_layers(
        models=[model_layer(source.gguf, quant)],
        adapter=adapter_layer(source.adapter) if source.adapter else None,
        chat_template=source.chat_template,
        template=source.go_template,
        params={"stop": source.stop, **source.params},
        system=source.system,
        license_text=source.license,
    )
    summary = {
        "source": f"copy of {source.name}",
        "architecture": source.family,
        "quantizations": {quant: source.gguf.stat().st_size},
    }
    push = PushRequest(target.name, layers, {"model_format": "gguf"}, summary)
    pushed = await run_in_threadpool(registry.push, push)
    if not target.is_version and target.tag != "latest":
        await run_in_threadpool(registry.tag, f"{target.name}:{pushed.version}", target.tag)
    state.refresh(target.name)
    return Response(status_code=200)


@router.delete("/delete")
async def delete(body: DeleteRequest, request: Request) -> Response:
    state = get_state(request)
    registry = state.require_registry()
    model = state.catalog.get(body.target)
    await run_in_threadpool(state.pool.unload, model.engine_key)
    if model.version != "file":
        reference = (
            model.name
            if not model.name.endswith(":latest")
            else f"{model.base_name}:{model.version}"
        )
        await run_in_threadpool(registry.remove, reference)
    state.catalog.remove(model.name)
    state.refresh(model.base_name)
    return Response(status_code=200)


# -- create, step by step ------------------------------------------------------------------


def _uploaded(
    registry: Registry, body: CreateRequest, base: ServedModel | None
) -> tuple[list[Layer], Layer | None]:
    """The model GGUFs and adapter: uploaded blobs first, else the base model's files."""
    models = [
        model_layer(path, _gguf_kind(path, f"files.{name}"), name)
        for name, path in _blob_paths(registry, body.files)
    ]
    if base is not None and base.gguf is not None and not models:
        models = [model_layer(base.gguf, base.quantization)]
    uploaded = _blob_paths(registry, body.adapters)
    if len(uploaded) > 1:
        raise BadRequestError("a model takes one LoRA adapter", where="adapters")
    adapters = [_checked_adapter(path, name, models) for name, path in uploaded]
    if base is not None and base.adapter is not None and not adapters:
        adapters = [adapter_layer(base.adapter)]
    if not models:
        raise BadRequestError(
            "create needs 'files' (a GGUF blob) or 'from' (a served model)", where="files"
        )
    return models, adapters[0] if adapters else None


def _checked_adapter(path: Path, name: str, models: list[Layer]) -> Layer:
    """An uploaded adapter that fits the model (llama.cpp crashes on one that does not)."""
    model = models[0].source if models else None
    try:
        check_adapter_file(path, model if isinstance(model, Path) else None)
    except ModelError as exc:
        raise BadRequestError(exc.what, where=f"adapters.{name}", fix=exc.fix) from exc
    return adapter_layer(path, name)


def _checked_template(template: str | None) -> str | None:
    """A Go TEMPLATE that parses (a broken one would fail every later request)."""
    if template is not None:
        try:
            GoChatTemplate(template)
        except TemplateError as exc:
            raise BadRequestError(exc.what, where="template", fix=exc.fix) from exc
    return template


def _blob_paths(registry: Registry, files: dict[str, str] | None) -> list[tuple[str, Path]]:
    return [(name, registry.blobs.local_path(_digest(d))) for name, d in (files or {}).items()]


def _gguf_kind(path: Path, where: str) -> str:
    """The quantization of an uploaded GGUF (a 400 when the blob is not a model GGUF)."""
    try:
        facts = gguf_facts(path)
    except ModelError as exc:
        raise BadRequestError(f"the uploaded file is not a GGUF: {exc.what}", where=where) from exc
    if facts["type"] == "adapter":
        raise BadRequestError("this file is a LoRA adapter; send it in 'adapters'", where=where)
    return (facts["quantization"] or "gguf").lower()


async def _quantized(registry: Registry, model: Layer, qtype: str) -> Path:
    """The model quantized by llama.cpp into a file beside the registry, for `quantize`."""
    source = model.source
    assert isinstance(source, Path)
    if qtype not in LLAMA_TYPES:
        raise BadRequestError(
            f"cannot quantize to {qtype!r}", where="quantize",
            fix=f"choose one of {', '.join(LLAMA_TYPES)}",
        )  # fmt: skip
    problem = await run_in_threadpool(unquantizable, source, model.annotations.get(FILENAME))
    if problem is not None:
        raise BadRequestError(
            problem, where="quantize", fix="create from an f16 GGUF, or leave quantize out"
        )
    target = registry.root / f".create-{uuid.uuid4().hex}-{qtype}.gguf"
    await run_in_threadpool(quantize, source, target, qtype)
    return target


def _create_request(
    name: str,
    body: CreateRequest,
    base: ServedModel | None,
    models: list[Layer],
    adapter: Layer | None,
) -> PushRequest:
    """The version /api/create stores: files, templates, parameters, system, license."""
    main = models[0].source
    assert isinstance(main, Path)
    facts = gguf_facts(main)
    params: dict[str, Any] = {"stop": facts["stop"] or (base.stop if base else [])}
    params.update(body.parameters or {})
    layers = version_layers(
        models=models,
        adapter=adapter,
        chat_template=facts["chat_template"] or (base.chat_template if base else None),
        # An Ollama Go template, kept for Ollama clients as given.
        template=_checked_template(body.template),
        params=params,
        system=body.system or (base.system if base else None),
        license_text=body.license_text() or facts["license"],
        lineage={"created_by": "/api/create", "from": body.from_},
    )
    quant = models[0].annotations.get(QUANTIZATION, "gguf")
    summary = {
        "source": "api/create",
        "architecture": facts["architecture"],
        "quantizations": {quant: main.stat().st_size},
    }
    return PushRequest(name, layers, ollama_config(facts, quant), summary)


def _digest(text: str) -> str:
    """A blob digest from a URL, as sha256:<hex> (the same rule as wire.Digest)."""
    if not re.fullmatch(DIGEST_PATTERN, text):
        raise BadRequestError("not a sha256 digest (sha256:<64 hex digits>)", where="digest")
    return text.replace("sha256-", "sha256:", 1)


def _ndjson(lines: list[BaseModel]) -> StreamingResponse:
    async def encoded() -> AsyncIterator[str]:
        for line in lines:
            yield line.model_dump_json() + "\n"
            await asyncio.sleep(0)

    return StreamingResponse(encoded(), media_type="application/x-ndjson")
