"""Ollama-compatible routes: chat, generate, tags, show, ps, version, embed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from astra_tune import __version__
from astra_tune.serve.app import BadRequestError, ServerState, collect, get_state, read_json
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.engine import Finished, Sampling

router = APIRouter(prefix="/api")


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict[str, Any]:
    state = get_state(request)
    return {"models": [_describe(m) for m in state.catalog.all()]}


@router.get("/ps")
async def ps(request: Request) -> dict[str, Any]:
    state = get_state(request)
    running = []
    for name, engine in list(state.pool.engines.items()):
        expires = state.pool.expires.get(name, time.time())
        running.append(
            {
                **_describe(engine.model),
                "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
                "size_vram": 0,
            }
        )
    return {"models": running}


@router.post("/show")
async def show(request: Request) -> dict[str, Any]:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(body.get("model") or body.get("name") or "")
    from astra_tune.registry.push import gguf_facts

    if model.gguf is None:
        assert model.upstream is not None
        return {
            "modelfile": f"# forwarded to {model.upstream.base_url} as {model.upstream.model}\n",
            "parameters": "",
            "template": "",
            "details": _details(model),
            "model_info": {"general.architecture": "upstream"},
        }
    facts = await run_in_threadpool(gguf_facts, model.gguf)
    arch = facts["architecture"]
    info = {
        "general.architecture": arch,
        "general.name": facts["name"],
        "general.parameter_count": facts["parameters"],
        "general.size_label": facts["size_label"],
        f"{arch}.context_length": facts["context_length"],
        f"{arch}.embedding_length": facts["embedding_length"],
        f"{arch}.block_count": facts["block_count"],
    }
    from astra_tune.ollama.modelfile import Modelfile

    template = model.go_template or _translated(model)
    params = {"stop": model.stop, **model.params} if model.stop else dict(model.params)
    modelfile = Modelfile(
        from_=str(model.gguf),
        adapters=[str(model.adapter)] if model.adapter else [],
        template=template,
        system=model.system,
        parameters=params,
        license=[model.license] if model.license else [],
    )
    parameters = "\n".join(
        f"{name:<30} {json.dumps(item) if isinstance(item, str) else item}"
        for name, value in params.items()
        for item in (value if isinstance(value, list) else [value])
    )
    return {
        "modelfile": modelfile.text(f"Modelfile of {model.name}, from astra serve"),
        "parameters": parameters,
        "template": template or model.chat_template or "",
        "system": model.system or "",
        "license": model.license or "",
        "details": _details(model),
        "model_info": info,
        "modified_at": model.modified_at or _mtime(model),
    }


def _translated(model: ServedModel) -> str | None:
    """The model's Jinja chat template as an Ollama TEMPLATE, when it translates."""
    from astra_tune.ollama.create import ollama_template

    return ollama_template(model.chat_template, model.bos_token, model.eos_token).template


@router.post("/chat", response_model=None)
async def chat(request: Request) -> Any:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(body.get("model") or "")
    messages = body.get("messages") or []
    if not messages:  # Ollama loads the model and answers at once
        return await _load(state, model)
    chat_messages = [
        {"role": m.get("role", "user"), "content": m.get("content") or ""} for m in messages
    ]
    if model.system and not any(m["role"] == "system" for m in chat_messages):
        chat_messages.insert(0, {"role": "system", "content": model.system})
    events = await state.start_chat(model, chat_messages, _sampling(body, model))
    if body.get("stream", True):
        return _ndjson(_chat_lines(events, model), events)
    text, done = await collect(events)
    return {
        **_head(model),
        "message": {"role": "assistant", "content": text},
        **_tail(done),
    }


@router.post("/generate", response_model=None)
async def generate(request: Request) -> Any:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(body.get("model") or "")
    prompt_text = body.get("prompt") or ""
    if not prompt_text:
        return await _load(state, model)
    sampling = _sampling(body, model)
    if body.get("raw"):
        events = await state.start_text(model, prompt_text, sampling)
    else:
        system = body.get("system") or model.system
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt_text}
        ]
        events = await state.start_chat(model, turns, sampling)
    if body.get("stream", True):
        return _ndjson(_generate_lines(events, model), events)
    answer, done = await collect(events)
    return {**_head(model), "response": answer, **_tail(done)}


@router.post("/embed")
async def embed(request: Request) -> dict[str, Any]:
    state = get_state(request)
    body = await read_json(request)
    model = state.catalog.get(body.get("model") or "")
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise BadRequestError("'input' must be a string or a list of strings", where="input")
    started = time.perf_counter()
    load = 0.0
    if model.upstream is not None:
        vectors, tokens = await state.upstream(model).embed(texts)
    else:
        engine = await state.engine(model)
        vectors, tokens = await run_in_threadpool(engine.embed, texts)
        load = engine.load_seconds
    return {
        "model": model.name,
        "embeddings": vectors,
        "total_duration": _ns(time.perf_counter() - started),
        "load_duration": _ns(load),
        "prompt_eval_count": tokens,
    }


# -- helpers -----------------------------------------------------------------------------


def _sampling(body: dict[str, Any], model: ServedModel) -> Sampling:
    # Every Ollama option is accepted and type-checked; the sampling ones shape generation.
    # num_ctx is fixed per loaded model, and runner options (num_gpu, num_thread...) are the
    # server's to choose.
    options = {**model.params, **_validated_parameters(body.get("options") or {}, "options")}
    try:
        stops = options.get("stop") or []
        return Sampling(
            max_tokens=int(options["num_predict"]) if options.get("num_predict", -1) > 0 else None,
            temperature=float(options.get("temperature", 0.8)),
            top_p=float(options.get("top_p", 0.9)),
            top_k=int(options.get("top_k", 40)),
            min_p=float(options.get("min_p", 0.0)),
            repeat_penalty=float(options.get("repeat_penalty", 1.1)),
            seed=int(options["seed"]) if options.get("seed") is not None else None,
            stop=list(
                dict.fromkeys([*model.stop, *([stops] if isinstance(stops, str) else stops)])
            ),
            json_mode=body.get("format") == "json",
        )
    except (TypeError, ValueError) as exc:
        raise BadRequestError(f"invalid option: {exc}", where="options") from exc


def _ndjson(lines: AsyncIterator[dict[str, Any]], events: Any = None) -> StreamingResponse:
    async def encoded() -> AsyncIterator[str]:
        try:
            async for line in lines:
                yield json.dumps(line) + "\n"
        finally:
            if events is not None:  # cancel the generation when the client goes away
                await events.aclose()

    return StreamingResponse(encoded(), media_type="application/x-ndjson")


async def _chat_lines(
    events: AsyncIterator[tuple[str, Any]], model: ServedModel
) -> AsyncIterator[dict[str, Any]]:
    async for kind, value in events:
        if kind == "token":
            yield {**_head(model), "message": {"role": "assistant", "content": value},
                   "done": False}  # fmt: skip
        else:
            yield {**_head(model), "message": {"role": "assistant", "content": ""}, **_tail(value)}


async def _generate_lines(
    events: AsyncIterator[tuple[str, Any]], model: ServedModel
) -> AsyncIterator[dict[str, Any]]:
    async for kind, value in events:
        if kind == "token":
            yield {**_head(model), "response": value, "done": False}
        else:
            yield {**_head(model), "response": "", **_tail(value)}


def _head(model: ServedModel) -> dict[str, Any]:
    return {"model": model.name, "created_at": datetime.now(UTC).isoformat()}


def _tail(done: Finished) -> dict[str, Any]:
    first = done.first_token or done.ended
    return {
        "done": True,
        "done_reason": "length" if done.finish_reason == "length" else "stop",
        "total_duration": _ns(done.ended - done.started),
        "load_duration": 0,
        "prompt_eval_count": done.prompt_tokens,
        "prompt_eval_duration": _ns(first - done.started),
        "eval_count": done.completion_tokens,
        "eval_duration": _ns(done.ended - first),
    }


async def _load(state: ServerState, model: ServedModel) -> dict[str, Any]:
    """Ollama's empty request: load the model (kept alive) and answer at once."""
    load = 0.0 if model.upstream is not None else (await state.engine(model)).load_seconds
    return {**_head(model), "response": "", "message": {"role": "assistant", "content": ""},
            "done": True, "done_reason": "load", "load_duration": _ns(load)}  # fmt: skip


def _describe(model: ServedModel) -> dict[str, Any]:
    size = (model.gguf.stat().st_size if model.gguf else 0) + (
        model.adapter.stat().st_size if model.adapter else 0
    )
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": model.modified_at or _mtime(model),
        "size": size,
        "digest": (model.digest or "").removeprefix("sha256:") or _file_id(model),
        "details": _details(model),
    }


def _details(model: ServedModel) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if model.gguf is not None else "upstream",
        "family": model.family or "",
        "families": [model.family] if model.family else [],
        "parameter_size": model.parameter_size or "",
        "quantization_level": model.quantization or "",
    }


def _mtime(model: ServedModel) -> str:
    if model.gguf is None:
        return datetime.fromtimestamp(0, UTC).isoformat()
    return datetime.fromtimestamp(model.gguf.stat().st_mtime, UTC).isoformat()


def _file_id(model: ServedModel) -> str:
    if model.gguf is None:
        return ""
    stat = model.gguf.stat()
    return f"{stat.st_size:x}{stat.st_mtime_ns:x}"


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


# -- model management: blobs, create, copy, delete (stored in the registry) ----------------


@router.head("/blobs/{digest}")
async def blob_exists(request: Request, digest: str) -> Response:
    registry = _registry(get_state(request))
    return Response(status_code=200 if registry.blobs.exists(_digest(digest)) else 404)


@router.post("/blobs/{digest}")
async def blob_upload(request: Request, digest: str) -> Response:
    state = get_state(request)
    registry = _registry(state)
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


@router.post("/create", response_model=None)
async def create(request: Request) -> Any:
    state = get_state(request)
    registry = _registry(state)
    body = await read_json(request)
    name = body.get("model") or body.get("name") or ""
    from astra_tune.registry.names import parse_reference
    from astra_tune.registry.store import Layer, PushRequest

    ref = parse_reference(name)
    layers: list[Layer] = []
    base: ServedModel | None = None
    for filename, digest in (body.get("files") or {}).items():
        path = registry.blobs.local_path(_digest(digest))
        layers.append(Layer("model", path, {"org.astra.quantization": _quant_of(path),
                                            "org.astra.filename": filename}))  # fmt: skip
    for filename, digest in (body.get("adapters") or {}).items():
        path = registry.blobs.local_path(_digest(digest))
        layers.append(Layer("adapter", path, {"org.astra.filename": filename}))
    if body.get("from"):
        base = state.catalog.get(body["from"])
        if base.gguf is None:
            raise BadRequestError(f"{base.name} is forwarded upstream; there is no file to copy")
        if not any(layer.kind == "model" for layer in layers):
            layers.append(Layer("model", base.gguf, {
                "org.astra.quantization": (base.quantization or "gguf").lower(),
                "org.astra.filename": base.gguf.name,
            }))  # fmt: skip
        if base.adapter and not any(layer.kind == "adapter" for layer in layers):
            layers.append(Layer("adapter", base.adapter, {"org.astra.filename": base.adapter.name}))
    if not any(layer.kind == "model" for layer in layers):
        raise BadRequestError("create needs 'files' (a GGUF blob) or 'from' (a served model)")
    if body.get("messages"):
        raise BadRequestError(
            "create does not store seed messages", where="messages",
            fix="put the behaviour in 'system' instead",
        )  # fmt: skip
    model_path = next(layer.source for layer in layers if layer.kind == "model")
    assert isinstance(model_path, Path)
    if body.get("quantize"):
        model_path = await _quantized(registry, model_path, str(body["quantize"]).lower())
        for layer in layers:
            if layer.kind == "model":
                layer.source = model_path
                layer.annotations["org.astra.quantization"] = str(body["quantize"]).lower()
                layer.annotations["org.astra.filename"] = model_path.name
    from astra_tune.registry.push import gguf_facts

    facts = await run_in_threadpool(gguf_facts, model_path)
    template = facts["chat_template"] or (base.chat_template if base else None)
    if template:
        layers.append(Layer("chat_template", template.encode("utf-8")))
    if body.get("template"):  # an Ollama Go template, kept for Ollama clients as given
        layers.append(Layer("template", str(body["template"]).encode("utf-8")))
    params = {"stop": facts["stop"] or (base.stop if base else [])}
    params.update(_validated_parameters(body.get("parameters") or {}))
    layers.append(Layer("params", json.dumps(params).encode("utf-8")))
    system = body.get("system") or (base.system if base else None)
    if system:
        layers.append(Layer("system", str(system).encode("utf-8")))
    license_text = body.get("license") or facts["license"]
    if license_text:
        text = "\n".join(license_text) if isinstance(license_text, list) else str(license_text)
        layers.append(Layer("license", text.encode("utf-8")))
    layers.append(Layer("lineage", json.dumps({"created_by": "/api/create",
                                               "from": body.get("from")}).encode()))  # fmt: skip
    push = PushRequest(
        ref.name,
        layers,
        {"model_format": "gguf", "model_family": facts["architecture"],
         "file_type": (facts["quantization"] or "").upper()},
        {"source": "api/create", "architecture": facts["architecture"],
         "quantizations": {_quant_of(model_path): model_path.stat().st_size}},
    )  # fmt: skip
    version = ref.tag if ref.is_version else None
    try:
        pushed = await run_in_threadpool(registry.push, push, version=version)
    finally:
        if body.get("quantize"):
            model_path.unlink(missing_ok=True)  # the registry holds its own copy now
    if not ref.is_version and ref.tag != "latest":
        await run_in_threadpool(registry.tag, f"{ref.name}:{pushed.version}", ref.tag)
    _refresh(state, ref.name)
    statuses = [{"status": "writing manifest"}, {"status": "success"}]
    if body.get("stream", True):
        return _ndjson(_aiter(statuses))
    return statuses[-1]


@router.post("/copy")
async def copy(request: Request) -> Response:
    state = get_state(request)
    registry = _registry(state)
    body = await read_json(request)
    source = state.catalog.get(body.get("source") or "")
    if source.gguf is None:
        raise BadRequestError(f"{source.name} is forwarded upstream; there is no file to copy")
    from astra_tune.registry.names import parse_reference
    from astra_tune.registry.store import Layer, PushRequest

    target = parse_reference(body.get("destination") or "")
    quant = (source.quantization or "gguf").lower()
    layers = [Layer("model", source.gguf, {"org.astra.quantization": quant,
                                           "org.astra.filename": source.gguf.name})]  # fmt: skip
    if source.adapter:
        layers.append(Layer("adapter", source.adapter, {"org.astra.filename": source.adapter.name}))
    if source.chat_template:
        layers.append(Layer("chat_template", source.chat_template.encode("utf-8")))
    layers.append(Layer("params", json.dumps({"stop": source.stop, **source.params}).encode()))
    if source.system:
        layers.append(Layer("system", source.system.encode("utf-8")))
    summary = {
        "source": f"copy of {source.name}",
        "architecture": source.family,
        "quantizations": {(source.quantization or "gguf").lower(): source.gguf.stat().st_size},
    }
    push = PushRequest(target.name, layers, {"model_format": "gguf"}, summary)  # fmt: skip
    pushed = await run_in_threadpool(registry.push, push)
    if not target.is_version and target.tag != "latest":
        await run_in_threadpool(registry.tag, f"{target.name}:{pushed.version}", target.tag)
    _refresh(state, target.name)
    return Response(status_code=200)


@router.delete("/delete")
async def delete(request: Request) -> Response:
    state = get_state(request)
    registry = _registry(state)
    body = await read_json(request)
    model = state.catalog.get(body.get("model") or body.get("name") or "")
    await run_in_threadpool(state.pool.unload, model.name)
    if model.version != "file":
        reference = (
            model.name
            if not model.name.endswith(":latest")
            else f"{model.base_name}:{model.version}"
        )
        await run_in_threadpool(registry.remove, reference)
    state.catalog.remove(model.name)
    _refresh(state, model.base_name)
    return Response(status_code=200)


async def _quantized(registry: Any, source: Path, qtype: str) -> Path:
    """`source` quantized by llama.cpp into a file beside the registry, for `quantize`."""
    from astra_tune.export.quantize import LLAMA_TYPES, quantize

    if qtype not in LLAMA_TYPES:
        raise BadRequestError(
            f"cannot quantize to {qtype!r}", where="quantize",
            fix=f"choose one of {', '.join(LLAMA_TYPES)}",
        )  # fmt: skip
    target = registry.root / f".create-{uuid.uuid4().hex}-{qtype}.gguf"
    await run_in_threadpool(quantize, source, target, qtype)
    return target


def _registry(state: ServerState) -> Any:
    if state.registry is None:
        raise BadRequestError("this server has no registry, so it cannot store models")
    return state.registry


def _digest(text: str) -> str:
    value = text.replace("sha256-", "sha256:", 1)
    if not value.startswith("sha256:") or len(value) != 71:
        raise BadRequestError(f"not a sha256 digest: {text!r}", where="digest")
    return value


def _quant_of(path: Path) -> str:
    from astra_tune.registry.push import gguf_facts

    return (gguf_facts(path)["quantization"] or "gguf").lower()


def _validated_parameters(parameters: Any, where: str = "parameters") -> dict[str, Any]:
    """Ollama options checked by name and type, as Ollama's own server checks them."""
    from astra_tune.ollama.modelfile import ModelfileError, parse_parameter

    if not isinstance(parameters, dict):
        raise BadRequestError(f"'{where}' must be an object", where=where)
    checked: dict[str, Any] = {}
    for name, value in parameters.items():
        try:
            noun = "option" if where == "options" else "parameter"
            checked[name.lower()] = parse_parameter(name, value, f"{where}.{name}", noun)
        except ModelfileError as exc:
            raise BadRequestError(exc.what, where=exc.where, fix=exc.fix) from exc
    return checked


def _refresh(state: ServerState, name: str) -> None:
    """Re-read `name`'s versions and aliases from the registry into the catalog."""
    from astra_tune.serve.catalog import from_registry

    for served in [m for m in state.catalog.all() if m.base_name == name and m.version != "file"]:
        state.catalog.remove(served.name)
    for version in state.registry.list_versions(name):
        for tag in [version["version"], *version["aliases"]]:
            state.catalog.add(from_registry(state.registry, f"{name}:{tag}"))


async def _aiter(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item
