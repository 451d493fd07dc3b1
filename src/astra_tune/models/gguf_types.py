"""GGUF output types by name: the ones we write directly and the ones llama.cpp quantizes."""

from __future__ import annotations

from astra_tune.errors import ConfigError

# Written tensor by tensor by export/convert.py; the rest go through llama.cpp's quantizer.
DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")
# Approximate bits per weight, for progress totals only (llama.cpp decides the real mix).
LLAMA_TYPES: dict[str, float] = {
    "q8_0": 8.5,  # export writes q8_0 itself; llama.cpp's is for requantizing (/api/create)
    "q4_0": 4.5,
    "q4_1": 5.0,
    "q5_0": 5.5,
    "q5_1": 6.0,
    "q2_k": 3.0,
    "q3_k_s": 3.5,
    "q3_k_m": 3.9,
    "q3_k_l": 4.3,
    "q4_k_s": 4.6,
    "q4_k_m": 4.9,
    "q5_k_s": 5.5,
    "q5_k_m": 5.7,
    "q6_k": 6.6,
    "iq4_nl": 4.5,
    "iq4_xs": 4.3,
}
# What an export writes when no types are asked for; the quantized ones are kept only when
# they meet their verification targets for the model at hand (small models often do not).
DEFAULT_TYPES = ("f16", "q8_0", "q4_k_m")
# These need an importance matrix (llama.cpp refuses them without one); we do not compute it.
NEEDS_IMATRIX = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs")
ALL_TYPES = tuple(dict.fromkeys((*DIRECT_TYPES, *LLAMA_TYPES)))


def parse_types(text: str | list[str]) -> list[str]:
    """Validated, de-duplicated output types from 'f16,q4_k_m' or a list (case-insensitive)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    result: list[str] = []
    for raw in items:
        name = raw.strip().lower().replace("-", "_")
        if not name:
            continue
        if name in NEEDS_IMATRIX:
            raise ConfigError(
                f"{name} needs an importance matrix, which astra export does not compute",
                where="export.quant",
                fix="use q4_k_m, q5_k_m, q6_k or iq4_xs (no matrix needed)",
            )
        if name not in ALL_TYPES:
            raise ConfigError(
                f"unknown GGUF type {raw.strip()!r}",
                where="export.quant",
                fix=f"choose from {', '.join(ALL_TYPES)}",
            )
        if name not in result:
            result.append(name)
    if not result:
        raise ConfigError("no GGUF type requested", where="export.quant", fix="e.g. f16,q4_k_m")
    return result
