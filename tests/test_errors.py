"""The errors.py docstring is the map of the hierarchy: it names every subclass."""

from __future__ import annotations

import importlib
import pkgutil

import astra_tune
from astra_tune import errors
from astra_tune.errors import AstraError


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_astra_error_is_listed_in_the_errors_docstring() -> None:
    for module in pkgutil.walk_packages(astra_tune.__path__, "astra_tune."):
        if module.name == "astra_tune.__main__":  # runs the CLI when imported
            continue
        importlib.import_module(module.name)
    names = {cls.__name__ for cls in _subclasses(AstraError) if cls.__module__.startswith("astra")}
    assert {"ConfigError", "QueueFullError", "VersionNotFoundError"} <= names
    doc = errors.__doc__ or ""
    missing = sorted(n for n in names if f" {n} " not in doc.replace("\n", " "))
    assert not missing, f"add these to the errors.py docstring: {missing}"
