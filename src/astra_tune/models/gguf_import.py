"""Dequantize a GGUF file into a Hugging Face safetensors directory (fp32).

transformers reads GGUF (config, tokenizer and tensors), but a model it loads that way is
marked as GGUF-quantized and refuses `save_pretrained`. So we read the tensors with
transformers' own GGUF reader, load them into a fresh model built from the same config,
and save that. Loading the result later takes about a second instead of over a minute.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.progress import Progress

from astra_tune.atomic import staged_dir
from astra_tune.digests import file_sha256
from astra_tune.errors import ModelError
from astra_tune.progress import quiet_hf_progress

MARKER = "astra-model.json"
MARKER_FORMAT = 1


@dataclass(frozen=True)
class GgufSource:
    """Identity of a GGUF file, cheap to re-check (size, mtime) and exact (sha256)."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> GgufSource:
        stat = path.stat()
        return cls(
            path=path, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=file_sha256(path)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "sha256": self.sha256,
        }


def read_marker(model_dir: Path) -> dict[str, Any] | None:
    """The `astra-model.json` of a prepared directory, or None if it is not (fully) prepared."""
    try:
        return json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        # A missing or half-written marker means the directory was never finished.
        return None


def is_current(model_dir: Path, gguf_path: Path) -> bool:
    """True if `model_dir` was prepared from exactly this GGUF file."""
    marker = read_marker(model_dir)
    if marker is None or marker.get("format") != MARKER_FORMAT:
        return False
    recorded = marker.get("source", {})
    stat = gguf_path.stat()
    if recorded.get("size") == stat.st_size and recorded.get("mtime_ns") == stat.st_mtime_ns:
        return True
    # Same bytes under a new mtime (a reinstall) is still current.
    return recorded.get("sha256") == file_sha256(gguf_path)


def import_gguf(
    gguf_path: Path, out_dir: Path, *, name: str, progress: Progress | None = None
) -> Path:
    """Dequantize `gguf_path` into an fp32 HF directory at `out_dir`, atomically.

    The directory appears only when complete (built beside it, then renamed), so an
    interrupted import never leaves a half-written model that later runs would trust.
    """
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}", fix="check the path")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    progress = progress or _null_progress()
    source = GgufSource.of(gguf_path)

    step = progress.add_task("reading GGUF metadata", total=None)
    try:
        meta = gguf_utils.load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    except ValueError as exc:
        raise ModelError(
            f"cannot read {gguf_path.name}: {exc}",
            where=str(gguf_path),
            fix="use a GGUF of an architecture transformers supports (llama, mistral, qwen2, "
            "qwen3, gemma, phi3, ...) or pass the original Hugging Face directory instead",
        ) from exc
    config_values = dict(meta["config"])
    model_type = config_values.pop("model_type")
    config_values.pop("_model_name_or_path", None)
    config = AutoConfig.for_model(model_type, **config_values)
    progress.update(step, total=1, completed=1)

    with torch.device("meta"):
        # Only used to map GGUF tensor names onto this architecture's parameter names.
        skeleton = AutoModelForCausalLM.from_config(config)
    n_tensors = _count_tensors(gguf_path)
    step = progress.add_task("dequantizing tensors", total=n_tensors, unit="tensor")
    with track_gguf_loading(gguf_utils, progress, step):
        loaded = gguf_utils.load_gguf_checkpoint(
            str(gguf_path), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.float32
        )
    tensors: dict[str, torch.Tensor] = loaded["tensors"]

    step = progress.add_task("building model", total=None)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = set(result.missing_keys) - tied
    if missing or result.unexpected_keys:
        raise ModelError(
            f"{gguf_path.name} does not match its own {model_type} config: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(result.unexpected_keys)[:5]}",
            where=str(gguf_path),
            fix="the GGUF may be damaged or from an unsupported converter; re-download it",
        )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model.generation_config = GenerationConfig.from_model_config(config)
    if tokenizer.eos_token_id is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    progress.update(step, total=1, completed=1)

    step = progress.add_task("writing safetensors", total=None)
    with staged_dir(out_dir) as staging:
        with quiet_hf_progress():
            model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        marker = {
            "format": MARKER_FORMAT,
            "name": name,
            "source": {"kind": "gguf", **source.to_json()},
            "dtype": "float32",
            "model_type": model_type,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    progress.update(step, total=1, completed=1)
    return out_dir


def _count_tensors(gguf_path: Path) -> int:
    from gguf import GGUFReader

    return len(GGUFReader(str(gguf_path)).tensors)


@contextlib.contextmanager
def track_gguf_loading(module: Any, progress: Progress, task: Any) -> Iterator[None]:
    """Show transformers' per-tensor GGUF loop on our rich bar instead of its tqdm bar.

    The loop is inside `load_gguf_checkpoint`, which takes no callback; the module-level
    `tqdm` name is its only hook. If a future transformers renames it, we simply lose the
    per-tensor bar, not the import.
    """
    if not hasattr(module, "tqdm"):
        yield
        return

    def track(iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        for item in iterable:
            yield item
            progress.advance(task)

    original = module.tqdm
    module.tqdm = track
    try:
        yield
    finally:
        module.tqdm = original


def _null_progress() -> Progress:
    return Progress(disable=True)
