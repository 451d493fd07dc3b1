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
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelError(f"{Path(path).name} is not a GGUF file", where=path)
        version, tensors, kvs = struct.unpack("<IQQ", handle.read(20))
        if version < 2:
            raise ModelError(f"{Path(path).name} is GGUF v{version}, too old", where=path)
        items: list[tuple[str, Any]] = [("__tensor_count__", tensors)]
        for _ in range(kvs):
            key = _string(handle)
            (kind,) = struct.unpack("<I", handle.read(4))
            items.append((key, _value(handle, kind)))
        parameters = 0
        shapes: list[tuple[str, tuple[int, ...]]] = []
        for _ in range(tensors):  # tensor infos: name, dims (GGUF order), type, offset
            name = _string(handle)
            (n_dims,) = struct.unpack("<I", handle.read(4))
            dims = struct.unpack(f"<{n_dims}Q", handle.read(8 * n_dims))
            handle.read(12)
            shapes.append((name, tuple(dims)))
            count = 1
            for dim in dims:
                count *= dim
            parameters += count
        items.append(("__parameters__", parameters))
        items.append(("__shapes__", tuple(shapes)))
    return tuple(items)


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
