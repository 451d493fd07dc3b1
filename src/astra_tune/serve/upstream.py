"""Forward a model name to another OpenAI-compatible server, with the same events and metrics.

The upstream is always asked to stream, so time to first token is measured here exactly
as for local models, and both of our APIs (OpenAI and Ollama) can sit in front of it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from astra_tune.errors import AstraError
from astra_tune.serve.engine import Finished
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.settings import UpstreamSettings


class UpstreamError(AstraError):
    """The upstream server refused or failed the request."""

    def __init__(self, what: str, *, status: int, retry_after: str | None = None) -> None:
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after


class Upstream:
    """One upstream model: an HTTP client and the request translation."""

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        headers = {}
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
                headers["api-key"] = key  # Azure OpenAI's header
        self.http = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"), headers=headers, timeout=settings.timeout
        )

    async def start_chat(
        self,
        messages: list[dict[str, Any]],
        sampling: Sampling,
        on_done: Callable[[Finished], None],
    ) -> AsyncIterator[tuple[str, Any]]:
        body = {"messages": messages, **self._params(sampling)}
        return await self._start("/chat/completions", body, on_done, chat=True)

    async def start_text(
        self, prompt: str, sampling: Sampling, on_done: Callable[[Finished], None]
    ) -> AsyncIterator[tuple[str, Any]]:
        body = {"prompt": prompt, **self._params(sampling)}
        return await self._start("/completions", body, on_done, chat=False)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        response = await self._post("/embeddings", {"model": self.settings.model, "input": texts})
        body = response.json()
        vectors = [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
        return vectors, int((body.get("usage") or {}).get("prompt_tokens", 0))

    def _params(self, sampling: Sampling) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.settings.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.max_tokens:
            params["max_tokens"] = sampling.max_tokens
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if sampling.stop:
            params["stop"] = sampling.stop[:4]  # OpenAI accepts at most four
        if sampling.json_mode:
            params["response_format"] = {"type": "json_object"}
        if sampling.logit_bias:
            params["logit_bias"] = {str(k): v for k, v in sampling.logit_bias.items()}
        return params

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        try:
            response = await self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._refused(response)
        return response

    async def _start(
        self,
        path: str,
        body: dict[str, Any],
        on_done: Callable[[Finished], None],
        *,
        chat: bool,
    ) -> AsyncIterator[tuple[str, Any]]:
        started = time.perf_counter()
        request = self.http.build_request("POST", path, json=body)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise self._refused(response)
        return self._events(response, started, on_done, chat)

    async def _events(
        self,
        response: httpx.Response,
        started: float,
        on_done: Callable[[Finished], None],
        chat: bool,
    ) -> AsyncIterator[tuple[str, Any]]:
        first: float | None = None
        count = 0
        usage: dict[str, Any] = {}
        reason = "cancelled"
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    text = (
                        (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    )
                    if text:
                        count += 1
                        first = first or time.perf_counter()
                        yield "token", text
                    if choice.get("finish_reason"):
                        reason = "length" if choice["finish_reason"] == "length" else "stop"
            done = Finished(
                finish_reason=reason,
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", count)),
                started=started,
                first_token=first,
                ended=time.perf_counter(),
                load_seconds=0.0,
            )
            on_done(done)
            yield "done", done
        finally:
            await response.aclose()  # also when our client went away: the upstream stops too

    def _refused(self, response: httpx.Response) -> UpstreamError:
        try:
            error = response.json().get("error")
            message = error.get("message") if isinstance(error, dict) else str(error)
        except (json.JSONDecodeError, AttributeError):
            message = response.text[:300]
        return UpstreamError(
            f"upstream {self.settings.base_url} answered {response.status_code}: {message}",
            status=response.status_code,
            retry_after=response.headers.get("retry-after"),
        )

    def _unreachable(self, exc: Exception) -> UpstreamError:
        return UpstreamError(f"upstream {self.settings.base_url} unreachable: {exc}", status=502)
