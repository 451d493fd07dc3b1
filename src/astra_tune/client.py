"""Python client for `astra serve` (or any OpenAI-compatible server): sync and async.

Chat, completion, embeddings and model listing over the OpenAI routes, with streaming,
timeouts, and retries with exponential backoff on 429 and 503 (honouring Retry-After)
and on connection errors. A stream is retried only before its first token arrives.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from astra_tune.errors import AstraError

RETRY_STATUSES = (429, 503)


class ClientError(AstraError):
    """The server answered with an error (or could not be reached after retries)."""

    def __init__(self, what: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(what)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Completion:
    """A finished answer and what it cost."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class _Base:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None and response.headers.get("retry-after", "").isdigit():
            return float(response.headers["retry-after"])
        return self.backoff * (2**attempt) * (0.5 + random.random())

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message, code = error.get("message", ""), error.get("code")
        else:
            message, code = str(error or response.text), None
        request = response.request
        raise ClientError(
            f"{request.method} {request.url} -> {response.status_code}: {message}",
            status=response.status_code,
            code=code,
        )

    @staticmethod
    def _chat_body(
        model: str, messages: list[dict[str, Any]], stream: bool, params: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "stream": stream, **params}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    @staticmethod
    def _completion(body: dict[str, Any], chat: bool) -> Completion:
        choice = body["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
        usage = body.get("usage") or {}
        return Completion(
            text=text or "",
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )

    @staticmethod
    def _piece(line: str, chat: bool) -> str | None:
        if not line.startswith("data: ") or line == "data: [DONE]":
            return None
        chunk = json.loads(line[6:])
        if not chunk.get("choices"):
            return None
        choice = chunk["choices"][0]
        return (choice.get("delta") or {}).get("content") if chat else choice.get("text")


class Client(_Base):
    """Blocking client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.Client(timeout=self.timeout, headers=self.headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()  # type: ignore[no-any-return]

    def models(self) -> list[str]:
        return [m["id"] for m in self._request("GET", "/v1/models").json()["data"]]

    def chat(self, model: str, messages: list[dict[str, Any]], **params: Any) -> Completion:
        body = self._chat_body(model, messages, False, params)
        return self._completion(self._request("POST", "/v1/chat/completions", body).json(), True)

    def stream_chat(
        self, model: str, messages: list[dict[str, Any]], **params: Any
    ) -> Iterator[str]:
        yield from self._stream(
            "/v1/chat/completions", self._chat_body(model, messages, True, params), True
        )

    def complete(self, model: str, prompt: str, **params: Any) -> Completion:
        body = {"model": model, "prompt": prompt, **params}
        return self._completion(self._request("POST", "/v1/completions", body).json(), False)

    def stream_complete(self, model: str, prompt: str, **params: Any) -> Iterator[str]:
        yield from self._stream(
            "/v1/completions", {"model": model, "prompt": prompt, "stream": True, **params}, False
        )

    def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        body = self._request("POST", "/v1/embeddings", {"model": model, "input": texts}).json()
        return [d["embedding"] for d in body["data"]]

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                response = self._http.request(method, self.base_url + path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
                time.sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
                continue
            self._raise_for(response)
            return response
        raise AssertionError("unreachable: the loop returns or raises")

    def _stream(self, path: str, body: dict[str, Any], chat: bool) -> Iterator[str]:
        for attempt in range(self.max_retries + 1):
            try:
                with self._http.stream("POST", self.base_url + path, json=body) as response:
                    if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                        response.read()
                        time.sleep(self._delay(attempt, response))
                        continue
                    if response.status_code >= 400:
                        response.read()
                        self._raise_for(response)
                    for line in response.iter_lines():
                        piece = self._piece(line, chat)
                        if piece:
                            yield piece
                    return
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
                time.sleep(self._delay(attempt, None))


class AsyncClient(_Base):
    """asyncio client with the same methods, awaited."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout, headers=self.headers)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def models(self) -> list[str]:
        return [m["id"] for m in (await self._request("GET", "/v1/models")).json()["data"]]

    async def chat(self, model: str, messages: list[dict[str, Any]], **params: Any) -> Completion:
        body = self._chat_body(model, messages, False, params)
        response = await self._request("POST", "/v1/chat/completions", body)
        return self._completion(response.json(), True)

    async def stream_chat(
        self, model: str, messages: list[dict[str, Any]], **params: Any
    ) -> AsyncIterator[str]:
        body = self._chat_body(model, messages, True, params)
        for attempt in range(self.max_retries + 1):
            try:
                async with self._http.stream("POST", self.base_url + "/v1/chat/completions",
                                             json=body) as response:  # fmt: skip
                    if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                        await response.aread()
                        await asyncio.sleep(self._delay(attempt, response))
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        self._raise_for(response)
                    async for line in response.aiter_lines():
                        piece = self._piece(line, True)
                        if piece:
                            yield piece
                    return
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
                await asyncio.sleep(self._delay(attempt, None))

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        response = await self._request("POST", "/v1/embeddings", {"model": model, "input": texts})
        return [d["embedding"] for d in response.json()["data"]]

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            try:
                response = await self._http.request(method, self.base_url + path, json=body)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ClientError(f"cannot reach {self.base_url}: {exc}") from exc
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response))
                continue
            self._raise_for(response)
            return response
        raise AssertionError("unreachable: the loop returns or raises")
