"""Model references: `name`, `name:tag`, `namespace/name:tag`, validated before any path use.

Names become directory names under the registry, so they are restricted to a safe
alphabet (as Ollama's are): no path traversal, no empty or over-long parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from astra_tune.errors import ConfigError

PART = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
MAX_PART = 64
MAX_TAG = 64
DEFAULT_TAG = "latest"


@dataclass(frozen=True)
class Reference:
    """A validated `name[:tag]`; `tag` is a version (X.Y.Z) or an alias."""

    name: str
    tag: str

    @property
    def is_version(self) -> bool:
        return SEMVER.match(self.tag) is not None

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_reference(text: str, *, default_tag: str = DEFAULT_TAG) -> Reference:
    """`name[:tag]` -> Reference; errors say which part is wrong and why."""
    raw = text.strip()
    name, sep, tag = raw.rpartition(":") if ":" in raw else (raw, "", "")
    if not sep:
        tag = default_tag
    return Reference(validate_name(name, where=text), validate_tag(tag, where=text))


def validate_name(name: str, *, where: str | None = None) -> str:
    """A model name: lowercase parts of [a-z0-9._-], at most two (`namespace/name`)."""
    parts = name.split("/")
    problem = None
    if not name:
        problem = "the name is empty"
    elif any(not part for part in parts):
        problem = "a part of the name is empty"
    elif len(parts) > 2:
        problem = "a name has at most one '/' (namespace/name)"
    else:
        for part in parts:
            if len(part) > MAX_PART:
                problem = f"'{part[:20]}…' is longer than {MAX_PART} characters"
            elif part in (".", "..") or not PART.match(part):
                problem = (
                    f"'{part}' may hold only lowercase letters, digits, '.', '_' and '-', "
                    "and must start with a letter or digit"
                )
            if problem:
                break
    if problem:
        raise ConfigError(
            f"invalid model name {name!r}: {problem}",
            where=where or name,
            fix="use a name like 'orrery' or 'team/orrery-support'",
        )
    return name


def validate_tag(tag: str, *, where: str | None = None) -> str:
    """A tag: a semantic version X.Y.Z or an alias such as latest, production, champion."""
    if not tag or len(tag) > MAX_TAG or not TAG.match(tag) or ".." in tag:
        raise ConfigError(
            f"invalid tag {tag!r}: tags are 1-{MAX_TAG} characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit",
            where=where or tag,
            fix="use a version like 1.2.0 or an alias like production",
        )
    return tag


def parse_version(text: str) -> tuple[int, int, int]:
    """'1.2.3' -> (1, 2, 3); anything else is a clear error."""
    match = SEMVER.match(text.strip())
    if match is None:
        raise ConfigError(
            f"invalid version {text!r}",
            where="--version",
            fix="use semantic versioning: MAJOR.MINOR.PATCH, e.g. 1.0.0",
        )
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch
