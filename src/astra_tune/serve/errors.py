"""Errors the server answers with: HTTP status by exception type, in each API's envelope.

`STATUS` is the one table from exception type to (status, code); the most specific
class listed first wins. Nothing here reads an error's message to decide its status.
Under `/api/` errors are Ollama's `{"error": "..."}`; elsewhere OpenAI's
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from astra_tune.errors import AstraError, ConfigError, ModelError
from astra_tune.experiments.feedback import ResponseNotFoundError
from astra_tune.experiments.store import ExperimentError, ExperimentNotFoundError
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.modelfile import ModelfileError
from astra_tune.registry.blobs import BlobError
from astra_tune.registry.store import RegistryError, VersionNotFoundError
from astra_tune.serve.catalog import ModelNotServedError
from astra_tune.serve.engine import (
    ConversationRefusedError,
    EmptyPromptError,
    EngineError,
    PromptTooLongError,
    QueueFullError,
    UnknownTokenError,
)
from astra_tune.serve.upstream import UpstreamError

RETRY_AFTER_SECONDS = 1


class BadRequestError(AstraError):
    """The request asks for something this server cannot do as asked (400); `where` is
    the field path."""


class ShuttingDownError(AstraError):
    """The server is draining and takes no new requests (503)."""


def _upstream_status(exc: AstraError) -> tuple[int, str]:
    # The upstream's own 4xx goes through (a 404 stays a 404); anything else is our 502.
    assert isinstance(exc, UpstreamError)
    if exc.status == 429:
        return 429, "rate_limit_exceeded"
    return (exc.status if 400 <= exc.status < 500 else 502), "upstream_error"


Status = tuple[int, str] | Callable[[AstraError], tuple[int, str]]
STATUS: Sequence[tuple[type[AstraError], Status]] = (
    (QueueFullError, (429, "rate_limit_exceeded")),
    (ShuttingDownError, (503, "server_shutting_down")),
    (PromptTooLongError, (400, "context_length_exceeded")),
    (EmptyPromptError, (400, "invalid_request_error")),
    (ConversationRefusedError, (400, "invalid_request_error")),
    (UnknownTokenError, (400, "invalid_request_error")),
    # A Go TEMPLATE that does not parse or run: refused at /api/create; one already stored
    # fails the requests that render with it.
    (TemplateError, (400, "invalid_request_error")),
    (EngineError, (500, "engine_error")),
    (ModelNotServedError, (404, "model_not_found")),
    (VersionNotFoundError, (404, "model_not_found")),
    (UpstreamError, _upstream_status),
    (BlobError, (400, "blob_not_found")),
    (BadRequestError, (400, "invalid_request_error")),
    (ResponseNotFoundError, (404, "response_not_found")),
    (ExperimentNotFoundError, (404, "experiment_not_found")),
    (ExperimentError, (400, "invalid_request_error")),
    (ModelfileError, (400, "invalid_request_error")),
    (ConfigError, (400, "invalid_request_error")),
    (RegistryError, (400, "invalid_request_error")),
    # A served model that cannot be loaded (a broken file) is the server's problem.
    (ModelError, (500, "model_error")),
)

# OpenAI's error `type` for each status.
_OPENAI_TYPES = {
    401: "authentication_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
}


def documented_errors(
    envelope: type[BaseModel], streamed: str
) -> tuple[dict[int | str, dict[str, Any]], dict[int | str, dict[str, Any]]]:
    """OpenAPI `responses` for a router: its error envelope, and for routes that may
    stream, the streamed media type beside JSON."""
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": envelope} for status in (400, 401, 404, 429, 500, 502, 503)
    }
    stream = {"content": {streamed: {}}, "description": f"JSON, or {streamed} when streamed"}
    return errors, {**errors, 200: stream}


def status_of(exc: AstraError) -> tuple[int, str]:
    """The HTTP status and error code for `exc` (500 for a type the table does not list)."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status(exc) if callable(status) else status
    return 500, "internal_error"


def error_response(
    path: str, status: int, message: str, code: str | None, param: str | None = None
) -> JSONResponse:
    """An error in the envelope of the API that `path` belongs to."""
    # Echoed input may hold unpaired surrogates, which cannot be encoded as UTF-8.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if path.startswith("/api/"):
        # Ollama's envelope has no field slot: the field leads the message instead.
        if param and not message.startswith(param):
            message = f"{param}: {message}"
        return JSONResponse({"error": message}, status_code=status)
    kind = _OPENAI_TYPES.get(status, "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def field_path(location: Sequence[int | str]) -> str:
    """Pydantic's error location as a field path: ("body", "messages", 0, "content") ->
    "messages[0].content". Union member tags ("str", "list[TextPart]") are dropped."""
    path = ""
    for part in location[1:] if location and location[0] == "body" else location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_union_tag(part):
            continue
        else:
            path += f".{part}" if path else part
    return path


def _is_union_tag(part: str) -> bool:
    return part in _TYPE_TAGS or bool(re.search(r"[\[\]()A-Z-]", part))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable message for a body's validation errors, and the first field's path."""
    if not errors:
        return "the request body is invalid", None
    by_path: dict[str, list[str]] = {}
    for error in errors:
        path = field_path(error.get("loc", ()))
        text = str(error.get("msg", "invalid"))
        text = re.sub(r"valid dictionary( or (instance of \w+|object to extract fields from))?",
                      "JSON object", text)  # fmt: skip
        text = text.removeprefix("Value error, ")
        if error.get("type") == "missing" and not path:
            text = "the request body is required (a JSON object)"
        elif error.get("type") == "model_attributes_type" and not path:
            text = "the request body must be a JSON object"
        texts = by_path.setdefault(path, [])
        if text not in texts:
            texts.append(text)
    # Several errors at one path are the members of a union: any one of them would do.
    lines = [
        (f"{path}: " if path else "") + texts[0] + "".join(f" (or: {t})" for t in texts[1:])
        for path, texts in by_path.items()
    ]
    first = field_path(errors[0].get("loc", ())) or None
    shown = "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more)" if len(lines) > 3 else "")
    return shown, first


def _body_problem(exc: BaseException | None) -> str:
    if isinstance(exc, RecursionError):
        return "the request body is nested too deeply to read"
    if isinstance(exc, UnicodeDecodeError):
        return f"the request body is not UTF-8 text (byte {exc.start}: {exc.reason})"
    if isinstance(exc, json.JSONDecodeError):
        return f"the request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return f"the request body cannot be read: {exc}" if exc else "the request body is invalid"


def install_handlers(app: FastAPI, count_error: Callable[[str], None]) -> None:
    """Every error the app can raise, answered in the right envelope with the right status."""

    @app.exception_handler(AstraError)
    async def astra_error(request: Request, exc: AstraError) -> JSONResponse:
        status, code = status_of(exc)
        count_error(type(exc).__name__)
        message = exc.what
        # These name a field of the request body in `where`.
        param = exc.where if isinstance(exc, BadRequestError | ExperimentError) else None
        if isinstance(exc, ConfigError) and exc.problems:
            message += ": " + "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
            param = exc.problems[0].path
        message += f" ({exc.fix})" if exc.fix else ""
        response = error_response(request.url.path, status, message, code, param)
        if status == 429:
            upstream_says = getattr(exc, "retry_after", None)
            response.headers["Retry-After"] = upstream_says or str(RETRY_AFTER_SECONDS)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_error("RequestValidationError")
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = errors[0].get("ctx") or {}
            message = f"the request body is not JSON: {ctx.get('error', 'invalid')}"
            return error_response(request.url.path, 400, message, "invalid_request_error")
        message, param = validation_message(errors)
        return error_response(request.url.path, 400, message, "invalid_request_error", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body; the cause says why
            message = _body_problem(exc.__cause__)
            code = "invalid_request_error"
        else:
            message = str(exc.detail)
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        response = error_response(request.url.path, exc.status_code, message, code)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response
