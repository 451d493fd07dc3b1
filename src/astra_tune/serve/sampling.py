"""Generation settings and the one rule for their defaults, shared by both APIs.

A value comes from the request, else from the model's Modelfile PARAMETER, else from
`DEFAULTS`. The defaults are llama.cpp's own server defaults: llama.cpp is the engine, and
a client moving between `llama-server` and `astra serve` gets the same behaviour. The
OpenAI and Ollama routers only translate their field names onto Modelfile PARAMETER names
(`max_tokens` -> `num_predict`); neither keeps numbers of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# llama.cpp server defaults (tools/server: temperature 0.8, top_k 40, top_p 0.95,
# min_p 0.05, repeat_penalty 1.0 — penalties off).
DEFAULTS: dict[str, float | int] = {
    "temperature": 0.8,
    "top_p": 0.95,
    "top_k": 40,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
}


@dataclass
class Sampling:
    """How one generation samples and where it stops (what the engines take)."""

    max_tokens: int | None = None  # None: until the end of turn or the end of the context
    temperature: float = float(DEFAULTS["temperature"])
    top_p: float = float(DEFAULTS["top_p"])
    top_k: int = int(DEFAULTS["top_k"])
    min_p: float = float(DEFAULTS["min_p"])
    repeat_penalty: float = float(DEFAULTS["repeat_penalty"])
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    json_mode: bool = False
    logit_bias: dict[int, float] = field(default_factory=dict)


def resolve_sampling(
    asked: dict[str, Any],
    model_params: dict[str, Any],
    model_stop: list[str],
    *,
    stop: list[str] | None = None,
    json_mode: bool = False,
    logit_bias: dict[int, float] | None = None,
    default_max_tokens: int | None = None,
) -> Sampling:
    """Request values (`None` = unset) over the model's PARAMETERs over `DEFAULTS`.

    `asked` uses Modelfile PARAMETER names. `num_predict` <= 0 means "no limit", as in
    Ollama; `default_max_tokens` is an API's own default length (16 for OpenAI's legacy
    completions), used only when neither the request nor the model sets one.
    """

    def pick(name: str) -> Any:
        if asked.get(name) is not None:
            return asked[name]
        if model_params.get(name) is not None:
            return model_params[name]
        return DEFAULTS.get(name)

    predict = pick("num_predict")
    if predict is None:
        max_tokens = default_max_tokens
    else:
        max_tokens = int(predict) if int(predict) > 0 else None
    seed = pick("seed")
    return Sampling(
        max_tokens=max_tokens,
        temperature=float(pick("temperature")),
        top_p=float(pick("top_p")),
        top_k=int(pick("top_k")),
        min_p=float(pick("min_p")),
        repeat_penalty=float(pick("repeat_penalty")),
        seed=int(seed) if seed is not None else None,
        stop=list(dict.fromkeys([*model_stop, *(stop or [])])),
        json_mode=json_mode,
        logit_bias=dict(logit_bias or {}),
    )
