"""Clients of OpenAI-compatible endpoints (the eval judge, data augmentation)."""

from __future__ import annotations

import os
from typing import Any

from astra_tune.errors import ConfigError


def openai_client(base_url: str, api_key_env: str | None, *, field: str, retries: int) -> Any:
    """An `openai.OpenAI` for `base_url`, its key read from `api_key_env` (none: no key).

    `field` is the recipe field naming the variable, for the error when it is unset. The
    client retries 429/5xx and connection errors `retries` times with backoff.
    """
    import openai

    key = os.environ.get(api_key_env, "") if api_key_env else "none"
    if api_key_env and not key:
        raise ConfigError(
            f"the API key variable {api_key_env} is not set",
            where=field,
            fix=f"export {api_key_env}=... or drop {field}",
        )
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=retries)
