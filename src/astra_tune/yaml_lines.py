"""YAML loading that remembers the line of every key, so errors can point at file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astra_tune.errors import ConfigError, Problem

Key = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """A parsed YAML document and the 1-based line where each key path was written."""

    path: Path
    data: Any
    lines: dict[Key, int] = field(default_factory=dict)
    # YAML keeps the last of two equal keys without a word; a recipe should not.
    duplicates: list[Problem] = field(default_factory=list)

    def location(self, key: Key) -> str:
        """`file:line` of the deepest written prefix of `key` (the file alone if none)."""
        for end in range(len(key), 0, -1):
            line = self.lines.get(tuple(key[:end]))
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


def load_yaml(path: Path) -> YamlDocument:
    """Parse a YAML file; syntax errors become a ConfigError naming file:line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"recipe file not found: {path}",
            fix="check the path, or create one from `astra recipe show`",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start})", fix="save the recipe as UTF-8"
        ) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{path.name} is not valid YAML: {exc.problem}",
            where=where,
            fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)",
        ) from exc
    doc = YamlDocument(path=path, data=data)
    if node is not None:
        _collect_lines(node, (), doc)
    return doc


def _collect_lines(node: yaml.Node, prefix: Key, doc: YamlDocument) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if key in doc.lines:
                doc.duplicates.append(
                    Problem(
                        path=".".join(str(k) for k in key),
                        message=f"duplicate key (first at line {doc.lines[key]}; YAML would "
                        "silently keep this one)",
                        location=f"{doc.path}:{line}",
                    )
                )
            doc.lines[key] = line
            _collect_lines(value_node, key, doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*prefix, index)
            doc.lines[key] = item.start_mark.line + 1
            _collect_lines(item, key, doc)


def require_mapping(doc: YamlDocument) -> dict[str, Any]:
    """The document's top level as a mapping; anything else is a ConfigError."""
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise ConfigError(
            f"{doc.path.name} must be a mapping of recipe fields, not a {type(doc.data).__name__}",
            problems=[
                Problem(path="<top>", message="expected `key: value` lines", location=str(doc.path))
            ],
            fix="write the recipe as `name: my-run` / `base_model: ...` lines",
        )
    return doc.data
