"""Hugging Face checkpoint -> GGUF (f32, f16, bf16, q8_0), one tensor at a time.

Written on the `gguf` package (writer, tensor-name map, quantizers, special-vocab reader)
rather than llama.cpp's convert_hf_to_gguf.py, which is a script in a git checkout, not a
library. The layout choices follow it: 1-D tensors stay f32, Q and K rows are permuted for
llama.cpp's llama architecture (its RoPE pairs neighbouring dimensions, HF's pairs halves).

Tensor infos are declared first and data is streamed after, so peak memory is one source
tensor plus its converted copy, not a second copy of the model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from astra_tune.errors import ModelError
from astra_tune.models.gguf_types import DIRECT_TYPES


@dataclass(frozen=True)
class Architecture:
    """How one HF architecture maps onto a llama.cpp architecture."""

    gguf_arch: str
    permute_qk: bool


ARCHITECTURES = {
    "LlamaForCausalLM": Architecture("llama", permute_qk=True),
    "MistralForCausalLM": Architecture("llama", permute_qk=True),
    "Qwen2ForCausalLM": Architecture("qwen2", permute_qk=False),
}


@dataclass
class ConvertResult:
    """One written GGUF file."""

    path: Path
    qtype: str
    arch: str
    tensors: int
    parameters: int
    vocab: Any = None
    types: dict[str, int] = field(default_factory=dict)  # GGML type name -> tensor count


def architecture_of(config: dict[str, Any], where: Path) -> Architecture:
    """The supported architecture of a config.json, or a clear error listing them."""
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ModelError(
        f"GGUF export does not support the {', '.join(names) or config.get('model_type')} "
        f"architecture; supported: {', '.join(sorted(ARCHITECTURES))}",
        where=str(where / "config.json"),
        fix="export a llama, mistral or qwen2 model",
    )


def permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a Q or K projection (or a LoRA B) for llama.cpp's RoPE."""
    rows = weights.shape[0]
    return (
        weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def load_config(model_dir: Path) -> dict[str, Any]:
    """config.json as a dict (the converter reads it directly, like llama.cpp's)."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelError(f"no config.json in {model_dir}", where=str(model_dir))
    return json.loads(path.read_text(encoding="utf-8"))


def rope_settings(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE parameters, whether written as transformers 5 `rope_parameters` or older keys."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    return rope


SAFETENSORS_DTYPES: dict[str, Any] = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 by shifting into the high half
    "F64": np.float64,
}


class SafetensorsSource:
    """Tensors of an HF directory, by name, read one at a time from (sharded) safetensors.

    Read with plain file reads rather than the safetensors library, which memory-maps
    the file: every mapped page it touches stays resident, so converting a model would
    hold the whole checkpoint in RSS. The format is a JSON header and raw little-endian
    arrays, so reading it directly is a few lines.
    """

    def __init__(self, model_dir: Path) -> None:
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = [p.name for p in sorted(model_dir.glob("*.safetensors"))]
        if not files:
            raise ModelError(
                f"no *.safetensors weights in {model_dir}",
                where=str(model_dir),
                fix="save the model with save_pretrained(..., safe_serialization=True)",
            )
        self._entries: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for name in files:
            path = model_dir / name
            with path.open("rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            header.pop("__metadata__", None)
            for key, entry in header.items():
                self._entries[key] = (path, 8 + size, entry)

    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][2]["shape"])

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 and f16 are widened exactly)."""
        path, base, entry = self._entries[name]
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ModelError(
                f"tensor {name} is stored as {entry['dtype']}, which export does not read",
                where=str(path),
                fix="save the model in float32, float16 or bfloat16",
            )
        start, end = entry["data_offsets"]
        with path.open("rb") as handle:
            handle.seek(base + start)
            raw = bytearray(end - start)
            handle.readinto(raw)
        data = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"])
        if entry["dtype"] == "BF16":  # the top half of a float32
            return (data.astype(np.uint32) << 16).view(np.float32)
        return data.astype(np.float32, copy=False)


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: where its data comes from and how it is stored."""

    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    load: Callable[[], np.ndarray]


def plan_tensors(
    source: SafetensorsSource, config: dict[str, Any], arch: Architecture, model_dir: Path
) -> list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
    """(gguf name, shape, loader) for every tensor the GGUF holds, in file order."""
    import gguf

    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(arch_enum(arch.gguf_arch), n_layers)
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    tied = bool(config.get("tie_word_embeddings", False))
    planned: list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]] = []
    rope_freqs = _llama3_rope_factors(config)
    if rope_freqs is not None:
        planned.append(("rope_freqs.weight", rope_freqs.shape, lambda: rope_freqs))
    seen_output = False
    for hf_name in source.names():
        if hf_name.endswith(("rotary_emb.inv_freq", ".attn.masked_bias")):
            continue  # buffers recomputed at load time, not weights
        if hf_name == "lm_head.weight" and tied:
            continue
        new_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ModelError(
                f"tensor {hf_name} has no place in llama.cpp's {arch.gguf_arch} architecture",
                where=str(model_dir),
                fix="the checkpoint carries extra weights (a value head?); save the plain "
                "causal LM (AutoModelForCausalLM) and export that",
            )
        seen_output = seen_output or new_name == "output.weight"
        heads = None
        if arch.permute_qk and hf_name.endswith("q_proj.weight"):
            heads = n_head
        elif arch.permute_qk and hf_name.endswith("k_proj.weight"):
            heads = n_kv
        planned.append((new_name, source.shape(hf_name), _loader(source, hf_name, heads)))
    if not tied and not seen_output:
        raise ModelError(
            "the model has untied output embeddings but no lm_head.weight",
            where=str(model_dir),
            fix="re-save the model; its checkpoint is incomplete",
        )
    return planned


def _loader(source: SafetensorsSource, hf_name: str, heads: int | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = source.get(hf_name)
        return permute_rows(data, heads) if heads is not None else data

    return load


def storage_type(name: str, shape: tuple[int, ...], qtype: str) -> Any:
    """The GGML type a tensor is stored in for a requested output type."""
    import gguf

    types = gguf.GGMLQuantizationType
    if len(shape) <= 1 or name.endswith(("_norm.weight", ".bias")) or name == "rope_freqs.weight":
        return types.F32
    wanted = {"f32": types.F32, "f16": types.F16, "bf16": types.BF16, "q8_0": types.Q8_0}[qtype]
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if shape[-1] % block:
        return types.F16  # rows that do not split into whole blocks cannot be quantized
    return wanted


def encode(data: np.ndarray, qtype: Any) -> np.ndarray:
    """Tensor data in its GGML storage type (float arrays, or raw bytes for bf16/q8_0)."""
    import gguf

    types = gguf.GGMLQuantizationType
    if qtype == types.F32:
        return data.astype(np.float32, copy=False)
    if qtype == types.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32, copy=False), qtype)


def nbytes(shape: tuple[int, ...], qtype: Any) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def write_gguf(
    model_dir: Path,
    out_path: Path,
    qtype: str,
    *,
    tokenizer: Any,
    metadata: dict[str, Any],
    pre_override: str | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Convert `model_dir` into `out_path` (written to a temp name, renamed when complete)."""
    import gguf

    from astra_tune.export.vocab import write_vocab

    if qtype not in DIRECT_TYPES:
        raise ModelError(f"{qtype} is not written directly", fix=f"use {', '.join(DIRECT_TYPES)}")
    config = load_config(model_dir)
    arch = architecture_of(config, model_dir)
    source = SafetensorsSource(model_dir)
    planned = plan_tensors(source, config, arch, model_dir)

    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, arch.gguf_arch)
    try:
        _write_metadata(writer, metadata, planned)
        _write_hparams(writer, config, arch, qtype)
        vocab = write_vocab(writer, model_dir, tokenizer, int(config["vocab_size"]), pre_override)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        counts: dict[str, int] = {}
        stored: list[tuple[PlannedTensor, Any]] = []
        for name, shape, load in planned:
            storage = storage_type(name, shape, qtype)
            counts[storage.name] = counts.get(storage.name, 0) + 1
            entry = PlannedTensor(name, shape, storage, load)
            stored.append((entry, storage))
            writer.add_tensor_info(
                name, shape, np.dtype(np.float32), nbytes(shape, storage), raw_dtype=storage
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for entry, storage in stored:
            data = encode(entry.load(), storage)
            writer.write_tensor_data(data)
            del data
            if on_tensor is not None:
                on_tensor(entry.name)
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    parameters = sum(math.prod(shape) for _, shape, _ in planned)
    return ConvertResult(out_path, qtype, arch.gguf_arch, len(planned), parameters, vocab, counts)


def tensor_count(model_dir: Path) -> int:
    """How many tensors `write_gguf` will write (for progress totals)."""
    config = load_config(model_dir)
    arch = architecture_of(config, model_dir)
    return len(plan_tensors(SafetensorsSource(model_dir), config, arch, model_dir))


def _write_metadata(
    writer: Any, metadata: dict[str, Any], planned: list[tuple[str, tuple[int, ...], Any]]
) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(metadata.get("name") or "model")
    if metadata.get("base_model"):
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, str(metadata["base_model"]))
    if metadata.get("license"):
        writer.add_license(str(metadata["license"]))
    if metadata.get("finetune"):
        writer.add_finetune(str(metadata["finetune"]))
    total = sum(math.prod(shape) for name, shape, _ in planned if name != "rope_freqs.weight")
    writer.add_size_label(gguf.size_label(total, 0, 0, 0))
    writer.add_string("astra_tune.version", str(metadata.get("astra_version", "unknown")))


def _write_hparams(writer: Any, config: dict[str, Any], arch: Architecture, qtype: str) -> None:
    import gguf

    n_head = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = rope_settings(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = rope["rope_type"]
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif kind not in ("default", "llama3"):  # llama3 scaling travels as the rope_freqs tensor
        raise ModelError(
            f"RoPE scaling {kind!r} has no GGUF equivalent we write",
            where="config.json: rope_parameters.rope_type",
            fix="export a model with default, linear, yarn or llama3 RoPE scaling",
        )
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_file_type(file_types[qtype])


def _llama3_rope_factors(config: dict[str, Any]) -> np.ndarray | None:
    """Llama 3.1+ frequency factors, which llama.cpp reads from a `rope_freqs` tensor."""
    rope = rope_settings(config)
    if rope["rope_type"] != "llama3":
        return None
    n_head = int(config["num_attention_heads"])
    dim = int(config.get("head_dim") or int(config["hidden_size"]) // n_head)
    base = float(rope["rope_theta"])
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def arch_enum(name: str) -> Any:
    import gguf

    for arch, arch_name in gguf.MODEL_ARCH_NAMES.items():
        if arch_name == name:
            return arch
    raise KeyError(name)
