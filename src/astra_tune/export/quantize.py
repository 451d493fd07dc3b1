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
from astra_tune.models.gguf_meta import gguf_facts
from astra_tune.models.gguf_types import LLAMA_TYPES
from astra_tune.progress import quiet_llama_logs

# llama.cpp quantizes from full-precision weights; it refuses an already quantized file.
QUANTIZABLE_FROM = ("f32", "f16", "bf16")


def unquantizable(source: Path, name: str | None = None) -> str | None:
    """Why llama.cpp would refuse to quantize `source` (called `name`), or None."""
    try:
        kind = gguf_facts(source)["quantization"]
    except ModelError:
        return None  # not a readable GGUF: llama.cpp's own failure below names the file
    if kind is not None and kind not in QUANTIZABLE_FROM:
        return (
            f"{name or source.name} is already quantized ({kind}); llama.cpp quantizes only from "
            f"{', '.join(QUANTIZABLE_FROM)}"
        )
    return None


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
    problem = unquantizable(source)
    if problem is not None:
        raise ModelError(problem, where=str(source), fix="quantize from an f16 GGUF export")
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
