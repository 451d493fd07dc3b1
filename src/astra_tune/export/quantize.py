"""Quantize a GGUF with llama.cpp's own quantizer (`llama_model_quantize`, via llama-cpp-python).

k-quants and i-quants choose per-tensor types and scales with logic only llama.cpp has;
calling it through the installed Python binding needs no llama.cpp checkout or build.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path

from astra_tune.errors import ConfigError, ModelError
from astra_tune.export.convert import DIRECT_TYPES
from astra_tune.progress import quiet_llama_logs

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


def quantize(
    source: Path,
    out_path: Path,
    qtype: str,
    *,
    threads: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Path:
    """Write `out_path` as `qtype` from an f16/bf16/f32 GGUF, atomically."""
    import llama_cpp

    if qtype not in LLAMA_TYPES:
        raise ConfigError(f"{qtype} is not a llama.cpp quantization type", where="export.quant")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype.upper()}")
    params.nthread = threads or os.cpu_count() or 1
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    expected = _expected_size(source, qtype)
    done = threading.Event()

    def watch() -> None:
        # llama.cpp writes tensors as it quantizes them, so the file size is the progress.
        while not done.wait(0.2):
            with contextlib.suppress(FileNotFoundError):
                if on_progress is not None:
                    on_progress(min(0.99, tmp.stat().st_size / expected))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with quiet_llama_logs():
            status = llama_cpp.llama_model_quantize(
                str(source).encode(), str(tmp).encode(), ctypes.byref(params)
            )
    finally:
        done.set()
        watcher.join()
    if status != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"llama.cpp could not quantize {source.name} to {qtype} (status {status}; "
            "its error is printed above)",
            where=str(source),
            fix="check that the source GGUF loads (astra chat FILE.gguf) and the disk has room",
        )
    os.replace(tmp, out_path)
    if on_progress is not None:
        on_progress(1.0)
    return out_path


def _expected_size(source: Path, qtype: str) -> float:
    # The source is f16 (16 bits per weight) for all but tiny norms.
    return max(1.0, source.stat().st_size * LLAMA_TYPES[qtype] / 16.0)
