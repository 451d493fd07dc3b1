"""The registry: push immutable versions, resolve `name[:tag]`, move aliases, collect garbage.

Layout, in Ollama's idiom: blobs by sha256 (`blobs/sha256-<hex>`), a manifest per version
(itself a blob) listing layers by media type, and an index (SQL) of versions, layers and
aliases. A push writes its blobs first and makes the version visible in one transaction,
so a push that dies half-way leaves nothing but unreferenced blobs for `gc`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from astra_tune.errors import AstraError, ConfigError
from astra_tune.home import registry_dir
from astra_tune.registry.blobs import BlobError, BlobStore, LocalBlobStore
from astra_tune.registry.index import (
    URL_VAR,
    LayerRow,
    TagEventRow,
    TagRow,
    VersionRow,
    now,
    open_engine,
    registry_url,
    session,
)
from astra_tune.registry.layers import (
    KIND_OF,
    MEDIA_TYPES,
    QUANTIZATION,
    Layer,
    annotation,
    json_bytes,
)
from astra_tune.registry.names import (
    DEFAULT_TAG,
    SEMVER,
    Reference,
    parse_reference,
    parse_version,
    validate_name,
    validate_tag,
)

# Which file `FROM` names when several quantizations exist and none is asked for.
PREFERRED = ("q4_k_m", "q5_k_m", "q8_0", "q6_k", "f16", "bf16", "f32")
BLOBS_VAR = "ASTRA_REGISTRY_BLOBS"  # e.g. a shared volume, next to a shared SQL index


class RegistryError(AstraError):
    """A registry operation cannot be done as asked (unknown version, immutable, ...)."""


class VersionNotFoundError(RegistryError):
    """A name, version or alias that the registry does not hold."""


@dataclass
class PushRequest:
    """A version to push: its layers, the Ollama-style config, and a summary for listings."""

    name: str
    layers: list[Layer]
    config: dict[str, Any]
    summary: dict[str, Any]


@dataclass(frozen=True)
class Pushed:
    """What a push stored."""

    name: str
    version: str
    manifest_digest: str
    new_bytes: int
    reused_bytes: int
    existing: bool = False  # the same content was already this version: nothing new made


@dataclass
class ModelVersion:
    """A resolved version: its files on disk and what goes with them."""

    name: str
    version: str
    created_at: str
    manifest_digest: str
    manifest: dict[str, Any]
    aliases: list[str]
    summary: dict[str, Any]
    models: dict[str, Path]  # quantization -> GGUF path
    adapter: Path | None
    chat_template: str | None
    template: str | None
    params: dict[str, Any]
    system: str | None
    license: str | None
    lineage: dict[str, Any]

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.version}"


def pick_quantization(version: ModelVersion, quant: str | None) -> str:
    """The quantization to serve: the one asked for, else the first of PREFERRED present."""
    if quant is not None:
        if quant not in version.models:
            raise ConfigError(
                f"{version.reference} has no {quant} file",
                where="--quant",
                fix=f"choose one of {', '.join(version.models)}",
            )
        return quant
    for candidate in PREFERRED:
        if candidate in version.models:
            return candidate
    return next(iter(version.models))


# The file to take weights from (training on a version, exporting it again): the most
# precise one, since every later step only loses precision.
MOST_PRECISE = ("f32", "bf16", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m")


def weights_quantization(version: ModelVersion) -> str:
    """The version's most precise model GGUF."""
    for candidate in MOST_PRECISE:
        if candidate in version.models:
            return candidate
    return next(iter(version.models))


def find_version(reference: str, *, verify: bool = False) -> ModelVersion | None:
    """The version `reference` (NAME[:TAG]) names in the default registry, or None when it
    names none: no registry yet (nothing is created by asking), not a valid reference, or
    not registered. Model specs try this before reading `org/name` as a hub id."""
    if not os.environ.get(URL_VAR) and not (registry_dir() / "index.db").is_file():
        return None
    try:
        parse_reference(reference)
    except ConfigError:
        return None  # cannot be a registry name: other kinds of spec apply
    try:
        return Registry().resolve(reference, verify=verify)
    except VersionNotFoundError:
        return None


@dataclass(frozen=True)
class BlobProblem:
    """A missing or corrupted blob and the versions that need it."""

    digest: str
    problem: str
    versions: list[str]


class Registry:
    """The model registry (blobs + index). Safe to use from several processes at once."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        url: str | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        self.root = root or registry_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        blob_dir = os.environ.get(BLOBS_VAR)
        self.blobs: BlobStore = blobs or LocalBlobStore(
            Path(blob_dir).expanduser() if blob_dir else self.root / "blobs"
        )
        self.engine = open_engine(url or registry_url(self.root))
        self._verified: set[str] = set()

    # -- writing -------------------------------------------------------------------------

    def push(
        self,
        request: PushRequest,
        *,
        version: str | None = None,
        reason: str = "push",
        on_bytes: Callable[[int], None] | None = None,
    ) -> Pushed:
        """Store a new immutable version; without `version`, the next patch number.

        Content identical to a version of the same name (same manifest digest) makes no
        new version unless `version` asks for one: the result names the existing one.
        """
        name = validate_name(request.name)
        if version is not None:
            parse_version(version)
        existing = set(self.blobs.digests())
        descriptors: list[dict[str, Any]] = []
        new_bytes = reused = 0
        for layer in request.layers:
            if isinstance(layer.source, bytes):
                digest = self.blobs.put_bytes(layer.source)
            else:
                digest = self.blobs.put_file(layer.source, on_bytes)
            size = self.blobs.size(digest)
            if digest in existing:
                reused += size
            else:
                new_bytes += size
                existing.add(digest)
            descriptor = {"mediaType": MEDIA_TYPES[layer.kind], "digest": digest, "size": size}
            if layer.annotations:
                descriptor["annotations"] = dict(layer.annotations)
            descriptors.append(descriptor)
        config_digest = self.blobs.put_bytes(json_bytes(request.config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPES["manifest"],
            "config": {
                "mediaType": MEDIA_TYPES["config"],
                "digest": config_digest,
                "size": self.blobs.size(config_digest),
            },
            "layers": descriptors,
        }
        manifest_digest = self.blobs.put_bytes(json_bytes(manifest))
        if version is None:
            same = self._with_manifest(name, manifest_digest)
            if same is not None:  # identical content: the version that holds it already
                return Pushed(name, same, manifest_digest, 0, new_bytes + reused, existing=True)
        for attempt in range(20):
            missing = [
                d for d in self._digests(manifest, manifest_digest) if not self.blobs.exists(d)
            ]
            if missing:
                # `rm` in another process collected a blob we share with the version it
                # removed, between our upload and now: nothing is published; try again.
                raise RegistryError(
                    f"blob {missing[0]} was removed while {name} was being pushed",
                    fix="push again",
                )
            try:
                chosen = self._commit(
                    name, version, manifest, manifest_digest, request.summary, reason
                )
                return Pushed(name, chosen, manifest_digest, new_bytes, reused)
            except IntegrityError:
                if version is not None:
                    raise RegistryError(
                        f"{name}:{version} already exists, and versions are immutable",
                        fix="push without --version (next patch) or choose a new version",
                    ) from None
                time.sleep(0.05 * (attempt + 1))  # another push took this number; retry
        raise RegistryError(f"could not allocate a version for {name} after 20 tries")

    def _with_manifest(self, name: str, manifest_digest: str) -> str | None:
        """The newest version of `name` whose manifest is exactly this one."""
        with session(self.engine) as db:
            rows = db.scalars(
                select(VersionRow).where(
                    VersionRow.name == name, VersionRow.manifest_digest == manifest_digest
                )
            ).all()
        if not rows:
            return None
        return max(rows, key=lambda r: (r.major, r.minor, r.patch)).version

    def _commit(
        self,
        name: str,
        version: str | None,
        manifest: dict[str, Any],
        manifest_digest: str,
        summary: dict[str, Any],
        reason: str,
    ) -> str:
        with session(self.engine) as db, db.begin():
            if version is None:
                latest = self._newest(db, name)
                major, minor, patch = (
                    (latest.major, latest.minor, latest.patch + 1) if latest else (1, 0, 0)
                )
                version = f"{major}.{minor}.{patch}"
            else:
                major, minor, patch = parse_version(version)
            row = VersionRow(
                name=name,
                version=version,
                major=major,
                minor=minor,
                patch=patch,
                manifest_digest=manifest_digest,
                created_at=now(),
                summary=summary,
            )
            blobs = [manifest["config"], *manifest["layers"]]
            row.layers = [
                LayerRow(
                    position=i,
                    digest=d["digest"],
                    media_type=d["mediaType"],
                    size=d["size"],
                    annotations=d.get("annotations", {}),
                )
                for i, d in enumerate(blobs)
            ]
            row.layers.append(
                LayerRow(
                    position=len(blobs),
                    digest=manifest_digest,
                    media_type=MEDIA_TYPES["manifest"],
                    size=self.blobs.size(manifest_digest),
                    annotations={},
                )
            )
            db.add(row)
            db.flush()  # the unique (name, version) check happens here
            newest = self._newest(db, name)
            if newest is not None and newest.version == version:
                self._move_tag(db, name, DEFAULT_TAG, version, reason)
        return version

    def tag(self, source: str, alias: str, *, reason: str = "") -> tuple[str | None, str]:
        """Point `alias` at the version `source` names; returns (previous, new) versions."""
        ref = parse_reference(source)
        alias = validate_tag(alias)
        if SEMVER.match(alias):
            raise ConfigError(
                f"{alias!r} looks like a version; aliases must not, or they would hide one",
                where=alias,
                fix="use a word: production, staging, champion, ...",
            )
        with session(self.engine) as db, db.begin():
            target = self._version_row(db, ref)
            previous = self._move_tag(db, ref.name, alias, target.version, reason or "tag")
        return previous, target.version

    def rollback(self, name: str, alias: str, *, reason: str = "") -> tuple[str, str]:
        """Move `alias` back to where it pointed before its last move; (from, to)."""
        name = validate_name(name)
        alias = validate_tag(alias)
        with session(self.engine) as db, db.begin():
            current = db.get(TagRow, (name, alias))
            last = db.scalars(
                select(TagEventRow)
                .where(TagEventRow.name == name, TagEventRow.tag == alias)
                .order_by(TagEventRow.id.desc())
                .limit(1)
            ).first()
            if current is None or last is None or last.from_version is None:
                raise RegistryError(
                    f"{name}:{alias} has no earlier version to roll back to",
                    fix=f"see `astra registry history {name} {alias}`",
                )
            exists = db.scalars(
                select(VersionRow).where(
                    VersionRow.name == name, VersionRow.version == last.from_version
                )
            ).first()
            if exists is None:
                raise RegistryError(
                    f"{name}:{alias} last pointed at {last.from_version}, which was removed",
                    fix=f"tag a version explicitly: astra registry tag {name}:X.Y.Z {alias}",
                )
            was = current.version
            self._move_tag(db, name, alias, last.from_version, reason or f"rollback from {was}")
        return was, last.from_version

    def history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias moves, oldest first (a name the registry never held is an error)."""
        with session(self.engine) as db:
            query = select(TagEventRow).where(TagEventRow.name == validate_name(name))
            known = db.scalars(select(TagEventRow.id).where(TagEventRow.name == name)).first()
            if known is None and self._newest(db, name) is None:
                raise VersionNotFoundError(f"no model named {name!r}", fix=self._known(db, name))
            if alias is not None:
                query = query.where(TagEventRow.tag == alias)
            return [
                {
                    "tag": e.tag,
                    "from": e.from_version,
                    "to": e.to_version,
                    "at": e.at.isoformat(timespec="seconds"),
                    "reason": e.reason,
                }
                for e in db.scalars(query.order_by(TagEventRow.id))
            ]

    def remove(self, reference: str, *, gc: bool = True) -> list[str]:
        """Remove an alias, or a version (and the aliases on it); then collect garbage."""
        ref = parse_reference(reference)
        removed: list[str] = []
        orphans: set[str] = set()
        with session(self.engine) as db, db.begin():
            if not ref.is_version:
                row = db.get(TagRow, (ref.name, ref.tag))
                if row is None:
                    raise VersionNotFoundError(
                        f"{ref} does not exist", fix="see `astra registry list`"
                    )
                self._move_tag(db, ref.name, ref.tag, None, "removed")
                removed.append(str(ref))
            else:
                version = self._version_row(db, ref)
                orphans.update(layer.digest for layer in version.layers)
                for tag in db.scalars(
                    select(TagRow).where(TagRow.name == ref.name, TagRow.version == version.version)
                ):
                    self._move_tag(db, ref.name, tag.tag, None, f"{version.version} removed")
                    removed.append(f"{ref.name}:{tag.tag}")
                db.delete(version)
                db.flush()
                removed.insert(0, f"{ref.name}:{version.version}")
                newest = self._newest(db, ref.name)
                if newest is not None and db.get(TagRow, (ref.name, DEFAULT_TAG)) is None:
                    # `latest` always names the newest version that still exists.
                    self._move_tag(db, ref.name, DEFAULT_TAG, newest.version, "newest remaining")
        if gc:
            # The removed version's own blobs go now (if nothing else uses them); other
            # unreferenced blobs wait out the grace period, as they may be a push in flight.
            with session(self.engine) as db:
                used = set(db.scalars(select(LayerRow.digest).where(LayerRow.digest.in_(orphans))))
            for digest in orphans - used:
                self.blobs.delete(digest)
            self.gc()
        return removed

    def gc(self, *, grace_seconds: float = 3600.0) -> tuple[int, int]:
        """Delete blobs no version uses; (count, bytes).

        Blobs younger than `grace_seconds` stay: a push in another process writes its
        blobs before it commits the version that uses them.
        """
        with session(self.engine) as db:
            used = set(db.scalars(select(LayerRow.digest)))
        count = freed = 0
        if isinstance(self.blobs, LocalBlobStore):
            count += self.blobs.remove_abandoned()
        cutoff = time.time() - grace_seconds
        for digest in list(self.blobs.digests()):
            if digest in used:
                continue
            path = self.blobs.local_path(digest)
            if path.stat().st_mtime > cutoff:
                continue
            freed += path.stat().st_size
            self.blobs.delete(digest)
            count += 1
        return count, freed

    # -- reading -------------------------------------------------------------------------

    def resolve(self, reference: str, *, verify: bool = True) -> ModelVersion:
        """`name[:tag]` (version or alias, default latest) -> files and metadata.

        Every blob read is checked against its digest (large files once per process).
        """
        ref = parse_reference(reference)
        with session(self.engine) as db:
            row = self._version_row(db, ref)
            aliases = sorted(
                t.tag
                for t in db.scalars(
                    select(TagRow).where(TagRow.name == row.name, TagRow.version == row.version)
                )
            )
        manifest = json.loads(self._read(row.manifest_digest, row))
        models: dict[str, Path] = {}
        adapter: Path | None = None
        texts: dict[str, str] = {}
        for layer in manifest["layers"]:
            kind = KIND_OF.get(layer["mediaType"], "unknown")
            digest = layer["digest"]
            if kind in ("model", "adapter"):
                if verify:
                    self._check_once(digest, row)
                path = self._path(digest, row)
                if kind == "model":
                    models[annotation(layer, QUANTIZATION) or "gguf"] = path
                else:
                    adapter = path
            elif kind != "unknown":
                texts[kind] = self._read(digest, row).decode("utf-8")
        return ModelVersion(
            name=row.name,
            version=row.version,
            created_at=row.created_at.isoformat(timespec="seconds"),
            manifest_digest=row.manifest_digest,
            manifest=manifest,
            aliases=aliases,
            summary=row.summary,
            models=models,
            adapter=adapter,
            chat_template=texts.get("chat_template"),
            template=texts.get("template"),
            params=json.loads(texts["params"]) if "params" in texts else {},
            system=texts.get("system"),
            license=texts.get("license"),
            lineage=json.loads(texts["lineage"]) if "lineage" in texts else {},
        )

    def change_marker(self) -> tuple[int, int, int]:
        """A value that changes whenever any version or alias does; cheap enough to poll.

        Every alias move (tag, rollback, push's `latest`, removal) appends a tag event,
        and versions only come and go, so the newest event id and the versions' count and
        newest id together change on every write that matters to a server.
        """
        with session(self.engine) as db:
            events = db.scalar(select(func.max(TagEventRow.id))) or 0
            count, newest = db.execute(
                select(func.count(VersionRow.id), func.max(VersionRow.id))
            ).one()
        return int(events), int(count), int(newest or 0)

    def list_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (newest first per name) with its aliases and summary."""
        with session(self.engine) as db:
            query = select(VersionRow)
            if name is not None:
                query = query.where(VersionRow.name == validate_name(name))
            rows = db.scalars(
                query.order_by(
                    VersionRow.name,
                    VersionRow.major.desc(),
                    VersionRow.minor.desc(),
                    VersionRow.patch.desc(),
                )
            ).all()
            tags: dict[tuple[str, str], list[str]] = {}
            for tag in db.scalars(select(TagRow)):
                tags.setdefault((tag.name, tag.version), []).append(tag.tag)
            return [
                {
                    "name": r.name,
                    "version": r.version,
                    "created_at": r.created_at.isoformat(timespec="seconds"),
                    "aliases": sorted(tags.get((r.name, r.version), [])),
                    "size": sum(layer.size for layer in r.layers),
                    "summary": r.summary,
                }
                for r in rows
            ]

    def verify(self) -> list[BlobProblem]:
        """Re-hash every blob any version uses; report the broken ones and who needs them."""
        with session(self.engine) as db:
            users: dict[str, list[str]] = {}
            for layer in db.scalars(select(LayerRow)):
                users.setdefault(layer.digest, []).append(
                    f"{layer.version.name}:{layer.version.version}"
                )
        problems = []
        for digest, versions in sorted(users.items()):
            try:
                self.blobs.check(digest)
            except BlobError as exc:
                problems.append(BlobProblem(digest, exc.what, sorted(set(versions))))
        return problems

    # -- internals -----------------------------------------------------------------------

    def _version_row(self, db: Any, ref: Reference) -> VersionRow:
        version = ref.tag
        if not ref.is_version:
            tag = db.get(TagRow, (ref.name, ref.tag))
            if tag is None:
                known = self._known(db, ref.name)
                raise VersionNotFoundError(f"{ref} does not exist", fix=known)
            version = tag.version
        row = db.scalars(
            select(VersionRow).where(VersionRow.name == ref.name, VersionRow.version == version)
        ).first()
        if row is None:
            raise VersionNotFoundError(
                f"{ref.name}:{version} does not exist", fix=self._known(db, ref.name)
            )
        return row

    @staticmethod
    def _digests(manifest: dict[str, Any], manifest_digest: str) -> list[str]:
        layers = [manifest["config"], *manifest["layers"]]
        return [d["digest"] for d in layers] + [manifest_digest]

    def _newest(self, db: Any, name: str) -> VersionRow | None:
        return db.scalars(
            select(VersionRow)
            .where(VersionRow.name == name)
            .order_by(VersionRow.major.desc(), VersionRow.minor.desc(), VersionRow.patch.desc())
            .limit(1)
        ).first()

    def _known(self, db: Any, name: str) -> str:
        versions = [
            r.version for r in db.scalars(select(VersionRow).where(VersionRow.name == name))
        ]
        tags = [t.tag for t in db.scalars(select(TagRow).where(TagRow.name == name))]
        if not versions:
            return "no model of that name; see `astra registry list`"
        return f"{name} has versions {', '.join(versions)} and aliases {', '.join(tags) or '-'}"

    def _move_tag(
        self, db: Any, name: str, alias: str, version: str | None, reason: str
    ) -> str | None:
        current = db.get(TagRow, (name, alias))
        previous = current.version if current is not None else None
        if version is None:
            if current is not None:
                db.delete(current)
        elif current is None:
            db.add(TagRow(name=name, tag=alias, version=version, updated_at=now()))
        else:
            current.version = version
            current.updated_at = now()
        db.add(
            TagEventRow(
                name=name,
                tag=alias,
                from_version=previous,
                to_version=version,
                at=now(),
                reason=reason[:500],
            )
        )
        return previous

    def _read(self, digest: str, row: VersionRow) -> bytes:
        try:
            return self.blobs.read_bytes(digest)
        except BlobError as exc:
            raise self._broken(exc, digest, row) from exc

    def _path(self, digest: str, row: VersionRow) -> Path:
        try:
            return self.blobs.local_path(digest)
        except BlobError as exc:
            raise self._broken(exc, digest, row) from exc

    def _check_once(self, digest: str, row: VersionRow) -> None:
        if digest in self._verified:
            return
        try:
            self.blobs.check(digest)
        except BlobError as exc:
            raise self._broken(exc, digest, row) from exc
        self._verified.add(digest)

    def _broken(self, exc: BlobError, digest: str, row: VersionRow) -> RegistryError:
        with session(self.engine) as db:
            needed = sorted(
                {
                    f"{layer.version.name}:{layer.version.version}"
                    for layer in db.scalars(select(LayerRow).where(LayerRow.digest == digest))
                }
            )
        return RegistryError(
            exc.what,
            where=f"{row.name}:{row.version}",
            fix=f"versions that need {digest}: {', '.join(needed)}; push them again "
            "(`astra registry verify` lists every damaged blob)",
        )
