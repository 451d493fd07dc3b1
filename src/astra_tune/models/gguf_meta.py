"""Read a GGUF's key-value metadata fast, without its tensors.

`gguf.GGUFReader` builds numpy views for every array element, which takes about three
seconds for a 49k-token vocabulary; the registry and the server read metadata of every
model they list, so we parse the header ourselves: it is a flat, documented format.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from astra_tune.errors import ModelError

# GGUF value types (gguf.GGUFValueType): scalar struct formats, 8 = string, 9 = array.
SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
STRING, ARRAY = 8, 9


def read_metadata(path: Path) -> dict[str, Any]:
    """Every metadata key of a GGUF (arrays as lists), and `__tensor_count__`,
    `__parameters__` and `__shapes__` ((name, dims in GGUF order) per tensor)."""
    stat = path.stat()
    return dict(_cached(str(path), stat.st_size, stat.st_mtime_ns))


@lru_cache(maxsize=64)
def _cached(path: str, size: int, mtime_ns: int) -> tuple[tuple[str, Any], ...]:
    name = Path(path).name
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{name} is not a GGUF file", where=path)
        try:
            items, infos, header_end = _header(handle)
        except (struct.error, MemoryError, OverflowError) as exc:
            # struct.error: the file ended inside the header; absurd counts from damaged
            # bytes fail the same way, one field later.
            raise ModelError(
                f"{name} is cut short or damaged: its header cannot be read "
                f"(stopped at byte {handle.tell()} of {size})",
                where=path,
                fix="download or export the file again",
            ) from exc
    _check_extent(name, path, size, dict(items), infos, header_end)
    parameters = 0
    for _, dims, _, _ in infos:
        count = 1
        for dim in dims:
            count *= dim
        parameters += count
    shapes = tuple((tensor, dims) for tensor, dims, _, _ in infos)
    return (*items, ("__parameters__", parameters), ("__shapes__", shapes))


TensorInfo = tuple[str, tuple[int, ...], int, int]  # name, dims (GGUF order), type, offset


def _header(handle: BinaryIO) -> tuple[list[tuple[str, Any]], list[TensorInfo], int]:
    version, tensors, kvs = struct.unpack("<IQQ", handle.read(20))
    if version < 2:
        raise ModelError(f"GGUF v{version} is too old (llama.cpp reads v2 and v3)")
    items: list[tuple[str, Any]] = [("__tensor_count__", tensors)]
    for _ in range(kvs):
        key = _string(handle)
        (kind,) = struct.unpack("<I", handle.read(4))
        items.append((key, _value(handle, kind)))
    infos: list[TensorInfo] = []
    for _ in range(tensors):
        tensor = _string(handle)
        (n_dims,) = struct.unpack("<I", handle.read(4))
        dims = struct.unpack(f"<{n_dims}Q", handle.read(8 * n_dims))
        kind, offset = struct.unpack("<IQ", handle.read(12))
        infos.append((tensor, tuple(dims), kind, offset))
    return items, infos, handle.tell()


def _check_extent(
    name: str,
    path: str,
    size: int,
    meta: dict[str, Any],
    infos: list[TensorInfo],
    header_end: int,
) -> None:
    """Every tensor's data lies inside the file (a download cut short fails here, not in
    llama.cpp at load time)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    alignment = int(meta.get("general.alignment") or 32)
    data_start = -(-header_end // alignment) * alignment
    needed = data_start
    for tensor, dims, kind, offset in infos:
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ModelError(
                f"{name}: tensor {tensor} has unknown type {kind}", where=path,
                fix="the file is damaged, or newer than this llama.cpp; download it again",
            ) from None  # fmt: skip
        count = 1
        for dim in dims:
            count *= dim
        needed = max(needed, data_start + offset + count // block * type_size)
    if needed > size:
        raise ModelError(
            f"{name} is cut short: its tensors need {needed} bytes, the file has {size}",
            where=path,
            fix="download or export the file again",
        )


def _string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", handle.read(8))
    return handle.read(length).decode("utf-8", "replace")


def _value(handle: BinaryIO, kind: int) -> Any:
    if kind in SCALARS:
        fmt = "<" + SCALARS[kind]
        return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]
    if kind == STRING:
        return _string(handle)
    if kind == ARRAY:
        item_kind, count = struct.unpack("<IQ", handle.read(12))
        if item_kind in SCALARS:
            fmt = SCALARS[item_kind]
            size = struct.calcsize(fmt)
            return list(struct.unpack(f"<{count}{fmt}", handle.read(size * count)))
        return [_value(handle, item_kind) for _ in range(count)]
    raise ModelError(f"unknown GGUF value type {kind}")


def gguf_facts(path: Path) -> dict[str, Any]:
    """Metadata of a GGUF that the registry and the server use (no tensor data read)."""
    meta = read_metadata(path)
    arch = meta.get("general.architecture")
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token_text(key: str) -> str | None:
        index = meta.get(key)
        return tokens[int(index)] if index is not None and int(index) < len(tokens) else None

    stops = [t for t in (token_text("tokenizer.ggml.eot_token_id"),
                         token_text("tokenizer.ggml.eos_token_id")) if t]  # fmt: skip
    file_type = meta.get("general.file_type")
    return {
        "type": meta.get("general.type") or "model",
        "architecture": arch,
        "name": meta.get("general.name"),
        "size_label": meta.get("general.size_label"),
        "license": meta.get("general.license"),
        "base_model": meta.get("general.base_model.0.name"),
        "quantization": quantization_name(file_type) if file_type is not None else None,
        "context_length": meta.get(f"{arch}.context_length"),
        "embedding_length": meta.get(f"{arch}.embedding_length"),
        "block_count": meta.get(f"{arch}.block_count"),
        "chat_template": meta.get("tokenizer.chat_template"),
        "stop": list(dict.fromkeys(stops)),
        "bos_token": token_text("tokenizer.ggml.bos_token_id") or "",
        "eos_token": token_text("tokenizer.ggml.eos_token_id") or "",
        "tensors": meta["__tensor_count__"],
        "parameters": meta["__parameters__"],
    }


def quantization_name(file_type: int) -> str:
    """llama.cpp's file type number as our lowercase name (15 -> q4_k_m)."""
    import gguf

    try:
        return (
            gguf.LlamaFileType(int(file_type))
            .name.removeprefix("MOSTLY_")
            .lower()
            .replace("all_", "")
        )
    except ValueError:
        return f"type{file_type}"


def check_adapter_file(path: Path, base: Path | None = None) -> None:
    """Refuse anything but a LoRA adapter GGUF that fits `base`, before llama.cpp sees it.

    llama.cpp crashes (not errors) on an adapter whose shapes do not match the model.
    """
    if not path.is_file():
        raise ModelError(f"adapter file not found: {path}", fix="check the --lora path")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelError(
            f"{path.name} is not a GGUF file",
            where=str(path),
            fix="pass the adapter GGUF written by `astra export --adapter-only`",
        )
    meta = read_metadata(path)
    kind = meta.get("general.type")
    if kind != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelError(
            f"{path.name} is a {kind or 'model'} GGUF, not a LoRA adapter",
            where=str(path),
            fix="pass the adapter GGUF written by `astra export --adapter-only`",
        )
    if base is None:
        return
    base_meta = read_metadata(base)
    arch, base_arch = meta.get("general.architecture"), base_meta.get("general.architecture")
    if arch != base_arch:
        raise ModelError(
            f"{path.name} adapts a {arch} model but {base.name} is {base_arch}",
            where=str(path),
            fix="use the base GGUF exported together with this adapter",
        )
    shapes = dict(base_meta["__shapes__"])
    for name, shape in meta["__shapes__"]:  # GGUF order: columns first
        target, _, part = name.rpartition(".")
        expected = shapes.get(target)
        fits = expected is not None and (
            shape[0] == expected[0] if part == "lora_a" else shape[1] == expected[1]
        )
        if not fits:
            raise ModelError(
                f"{path.name} does not fit {base.name}: {name} has shape {shape}, "
                f"the model's {target} has {expected}",
                where=str(path),
                fix="use the base GGUF exported together with this adapter",
            )
