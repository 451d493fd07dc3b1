"""Requests to an OpenAI-compatible endpoint for augmentation: cached, concurrent, budgeted.

The cache is keyed by the prompt as sent (its template, which is the prompt's version,
filled with the input), the model and the sampling settings, so a rerun sends nothing and
a killed run resumes where it stopped; each reply is written atomically as it arrives.
Retries with backoff on 429/5xx come from the openai client (`endpoints.py`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from astra_tune.atomic import write_text
from astra_tune.errors import DataError
from astra_tune.home import astra_home
from astra_tune.recipe import AugmentConfig


@dataclass
class Usage:
    """Requests sent, replies served from the cache, tokens used; shared across threads."""

    requests: int = 0
    cached: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Draw:
    """A prompt asked once more for another answer: sent with seed + draw."""

    prompt: Any
    draw: int


class AugmentClient:
    """Cached, concurrent, budgeted chat requests to one OpenAI-compatible endpoint."""

    def __init__(self, config: AugmentConfig, usage: Usage) -> None:
        from astra_tune.endpoints import openai_client

        self.openai = openai_client(config.endpoint, config.api_key_env,
                                    field="data.augment.api_key_env", retries=4)  # fmt: skip
        self.config = config
        self.usage = usage
        self.stopped_by_budget = False
        self.cache_dir = astra_home() / "cache" / "augment"
        self.lock = threading.Lock()

    def map(self, prompts: list[Any], on_done: Any) -> list[str | None]:
        """Each prompt's reply, in order; None for prompts not sent once over budget.

        A prompt is a string (one user turn) or a list of chat messages.
        """
        replies: list[str | None] = [None] * len(prompts)
        pending: dict[Future[str | None], int] = {}
        todo = iter(enumerate(prompts))
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            while True:
                while len(pending) < self.config.concurrency and not self._over_budget():
                    item = next(todo, None)
                    if item is None:
                        break
                    pending[pool.submit(self._reply, item[1])] = item[0]
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    replies[pending.pop(future)] = future.result()
                    on_done()
        self.stopped_by_budget |= any(r is None for r in replies)
        return replies

    def _over_budget(self) -> bool:
        limit = self.config.max_cost_tokens
        with self.lock:
            return limit is not None and self.usage.tokens >= limit

    def _reply(self, prompt: Any) -> str:
        draw = 0
        if isinstance(prompt, Draw):
            prompt, draw = prompt.prompt, prompt.draw
        seed = self.config.seed + draw
        identity = [self.config.model, self.config.temperature,
                    self.config.max_tokens, seed, prompt]  # fmt: skip
        key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        path = self.cache_dir / key[:2] / f"{key}.json"
        if path.is_file():
            with self.lock:
                self.usage.cached += 1
            return str(json.loads(path.read_text(encoding="utf-8"))["reply"])
        reply, tokens = self._ask(prompt, seed)
        write_text(path, json.dumps({"model": self.config.model, "prompt": prompt,
                                     "reply": reply, "tokens": tokens}))  # fmt: skip
        with self.lock:
            self.usage.requests += 1
            self.usage.tokens += tokens
        return reply

    def _ask(self, prompt: Any, seed: int) -> tuple[str, int]:
        import openai

        where = f"{self.config.endpoint} (model {self.config.model})"
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        try:
            response = self.openai.chat.completions.create(
                model=self.config.model,
                messages=messages,
                temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
                seed=seed,
            )
        except openai.APIConnectionError as exc:
            raise DataError(
                f"cannot reach the augmentation endpoint: {exc}",
                where=where,
                fix="start it (e.g. astra serve -m MODEL) or correct data.augment.endpoint",
            ) from exc
        except openai.NotFoundError as exc:
            raise DataError(
                f"the endpoint does not serve model {self.config.model!r}: {exc.message}",
                where=where,
                fix="pick a name from its /v1/models list",
            ) from exc
        except openai.APIStatusError as exc:
            raise DataError(
                f"the endpoint answered {exc.status_code}: {exc.message}", where=where
            ) from exc
        text = (response.choices[0].message.content or "") if response.choices else ""
        tokens = response.usage.total_tokens if response.usage else 0
        return text, tokens
