"""Server settings: flags, then environment (ASTRA_SERVE_*), then an optional YAML file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from astra_tune.errors import ConfigError, Problem

ENV_PREFIX = "ASTRA_SERVE_"


class UpstreamSettings(BaseModel):
    """A model name answered by another OpenAI-compatible server (vLLM, llama.cpp, Azure)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., description="The name clients ask for here.")
    base_url: str = Field(..., description="The server's OpenAI base URL, e.g. http://h:8000/v1.")
    model: str = Field(..., description="The model name to send upstream.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the upstream API key (never the key)."
    )
    timeout: float = Field(600.0, gt=0, description="Seconds to wait for the upstream.")


class ServeSettings(BaseModel):
    """Everything `astra serve` can be told; validated at start."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    models: list[str] = Field(
        default_factory=list,
        description="Registry references (name[:tag]) or .gguf files; empty: all registry models.",
    )
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys (plain; hashed at start)."
    )
    api_key_hashes: list[str] = Field(
        default_factory=list, description="Accepted API keys as sha256:<hex> of the key."
    )
    metrics_public: bool = Field(True, description="Serve /metrics without an API key.")
    max_queue: int = Field(8, ge=1, description="Requests waiting per model before 429.")
    parallel: Annotated[int, Field(ge=1, le=256)] | Literal["auto"] = Field(
        4,
        description="Sequences each model decodes together (continuous batching), each with "
        "n_ctx tokens of KV cache; auto: as many (up to 16) as fit a quarter of free memory.",
    )
    batch_tokens: int = Field(
        512,
        ge=16,
        description="Most tokens one decode step takes: running sequences' next tokens first, "
        "then prompt chunks.",
    )
    max_loaded: int = Field(2, ge=1, description="Models kept loaded at once (LRU).")
    keep_alive: float = Field(300.0, ge=0, description="Seconds an idle model stays loaded.")
    n_ctx: int = Field(4096, ge=64, description="Context length per loaded model.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores).")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    drain_seconds: float = Field(30.0, ge=0, description="How long shutdown waits for requests.")
    registry_poll: float = Field(
        2.0,
        ge=0,
        description="Seconds between checks for moved aliases and new versions in the registry "
        "(picked up without a restart); 0: never.",
    )
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="Model names forwarded to OpenAI-compatible servers."
    )

    def key_hashes(self) -> set[str]:
        """Every accepted key as sha256:<hex>; plain keys never leave this function."""
        hashes = {h.lower() for h in self.api_key_hashes}
        hashes |= {hash_key(k) for k in self.api_keys}
        return hashes


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_settings(config_file: Path | None, flags: dict[str, Any]) -> ServeSettings:
    """Merge the config file, the environment and the flags (flags win); errors name each."""
    values: dict[str, Any] = {}
    if config_file is not None:
        import yaml

        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}", where=str(config_file))
        loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("the serve config must be a mapping", where=str(config_file))
        values.update(loaded)
    for name, field in ServeSettings.model_fields.items():
        raw = os.environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        is_list = "list" in str(field.annotation)
        values[name] = [v.strip() for v in raw.split(",") if v.strip()] if is_list else raw
    values.update({k: v for k, v in flags.items() if v not in (None, [], ())})
    try:
        return ServeSettings.model_validate(values)
    except ValidationError as exc:
        problems = [
            Problem(
                path=".".join(str(p) for p in err["loc"]),
                message=err["msg"],
                location=str(config_file) if config_file else None,
            )
            for err in exc.errors()
        ]
        raise ConfigError(
            "invalid serve settings", problems=problems, fix="see `astra serve --help`"
        ) from exc
