"""Blob storage: files named by the sha256 of their content, written atomically.

The interface is small on purpose (put, open, path, exists, delete, list), so that an
fsspec-backed store can replace the local directory without touching the registry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from astra_tune.digests import file_sha256
from astra_tune.errors import AstraError

CHUNK = 1 << 22


class BlobError(AstraError):
    """A blob is missing or does not hash to its name."""


class BlobStore(Protocol):
    """Where blobs live. `digest` is always 'sha256:<hex>'."""

    def put_file(self, source: Path, on_bytes: Callable[[int], None] | None = None) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def exists(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int: ...
    def read_bytes(self, digest: str) -> bytes: ...
    def local_path(self, digest: str) -> Path: ...
    def check(self, digest: str) -> None: ...
    def delete(self, digest: str) -> None: ...
    def remove_abandoned(self) -> int: ...
    def digests(self) -> Iterator[str]: ...


class LocalBlobStore:
    """Blobs as `sha256-<hex>` files in one directory (Ollama's layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not _is_hex(hexdigest):
            raise BlobError(
                f"not a sha256 digest: {digest!r}", fix="digests look like sha256:<64 hex>"
            )
        return self.root / f"sha256-{hexdigest}"

    def put_file(self, source: Path, on_bytes: Callable[[int], None] | None = None) -> str:
        """Store `source`; content already stored (by digest and size) is not copied again."""
        known = f"sha256:{file_sha256(source)}"
        if self.exists(known) and self.size(known) == source.stat().st_size:
            if on_bytes is not None:
                on_bytes(source.stat().st_size)
            return known
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._incoming()
        digest = hashlib.sha256()
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                while block := src.read(CHUNK):
                    digest.update(block)
                    dst.write(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
                dst.flush()
                os.fsync(dst.fileno())
            copied = f"sha256:{digest.hexdigest()}"
            if copied != known:
                raise BlobError(
                    f"{source} changed while it was being stored",
                    where=str(source),
                    fix="push again once nothing is writing the file",
                )
            return self._commit(tmp, copied)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._incoming()
        try:
            with tmp.open("wb") as dst:
                dst.write(data)
                dst.flush()
                os.fsync(dst.fileno())
            return self._commit(tmp, f"sha256:{hashlib.sha256(data).hexdigest()}")
        finally:
            tmp.unlink(missing_ok=True)

    def _incoming(self) -> Path:
        """A unique temporary name in the blob directory (pid first, for remove_abandoned)."""
        return self.root / f".incoming-{os.getpid()}-{os.urandom(4).hex()}"

    def _commit(self, tmp: Path, digest: str) -> str:
        final = self._path(digest)
        if final.exists() and final.stat().st_size == tmp.stat().st_size:
            return digest  # same content already stored (by us or a concurrent push)
        # rename is atomic: readers see the whole blob or none, and two writers of the
        # same content both end with the same correct file.
        os.replace(tmp, final)
        return digest

    def exists(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def size(self, digest: str) -> int:
        return self._existing(digest).stat().st_size

    def local_path(self, digest: str) -> Path:
        return self._existing(digest)

    def read_bytes(self, digest: str) -> bytes:
        """The blob's content, verified against its digest."""
        data = self._existing(digest).read_bytes()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise BlobError(f"blob {digest} is corrupted (its content no longer matches)")
        return data

    def check(self, digest: str) -> None:
        """Re-hash the blob; BlobError if it is missing or its bytes changed."""
        if f"sha256:{file_sha256(self._existing(digest))}" != digest:
            raise BlobError(f"blob {digest} is corrupted (its content no longer matches)")

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def remove_abandoned(self) -> int:
        """Delete half-written incoming files of processes that died; how many."""
        import psutil

        removed = 0
        for path in self.root.glob(".incoming-*"):
            pid = path.name.split("-")[1]
            if pid.isdigit() and not psutil.pid_exists(int(pid)):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def digests(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("sha256-*")):
            yield "sha256:" + path.name.removeprefix("sha256-")

    def copy_to(self, digest: str, target: Path) -> None:
        """Copy a verified blob out to `target` (atomically)."""
        self.check(digest)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(self._existing(digest), tmp)
        os.replace(tmp, target)

    def open(self, digest: str) -> BinaryIO:
        return self._existing(digest).open("rb")

    def _existing(self, digest: str) -> Path:
        path = self._path(digest)
        if not path.is_file():
            raise BlobError(f"blob {digest} is missing from {self.root}")
        return path


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
