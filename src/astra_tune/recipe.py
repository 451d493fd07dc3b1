"""The run recipe: the one place where every option, its default and its meaning live.

A recipe is a YAML file validated by the `Recipe` model below. Later stages add their own
sections as nested models. Loading reports every problem at once, each with its field
path and file:line, and suggests the closest valid key for a misspelled one.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticUndefined

from astra_tune.errors import AstraError, ConfigError, Problem
from astra_tune.models.catalog import DEFAULT_MODEL
from astra_tune.yaml_lines import YamlDocument, load_yaml, require_mapping


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


RunName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Run name (letters, digits, '.', '_', '-'); names the run directory.",
    ),
]


class Recipe(Section):
    """A fine-tuning run, from base model to exported model."""

    name: RunName
    base_model: str = Field(
        DEFAULT_MODEL,
        description="Base model: a catalog name (`astra models list`), a local HF directory, "
        "a .gguf file or a Hugging Face hub id.",
    )
    seed: int = Field(
        42, ge=0, description="Random seed for data order, weight initialisation and sampling."
    )

    @field_validator("base_model")
    @classmethod
    def _check_base_model(cls, value: str, info: ValidationInfo) -> str:
        # Imported here: the resolver pulls in huggingface_hub, which `recipe show` never needs.
        from astra_tune.models.resolve import normalize_spec

        base_dir = (info.context or {}).get("base_dir")
        try:
            return normalize_spec(value, base_dir=base_dir)
        except AstraError as exc:
            # pydantic turns ValueError into a field error at this path; keep our fix text.
            raise ValueError(f"{exc.what}" + (f"; {exc.fix}" if exc.fix else "")) from exc


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; relative paths inside it are relative to the file."""
    doc = load_yaml(Path(path))
    return validate_recipe(require_mapping(doc), doc)


def validate_recipe(data: dict[str, Any], doc: YamlDocument | None = None) -> Recipe:
    """Validate recipe data, raising one ConfigError that lists every problem."""
    base_dir = doc.path.parent.resolve() if doc else None
    try:
        return Recipe.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_to_problem(error, doc) for error in exc.errors()]
        source = doc.path.name if doc else "recipe"
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        raise ConfigError(
            f"{source} is not a valid recipe ({count})",
            problems=problems,
            fix="correct the fields above; `astra recipe show` lists every field and its default",
        ) from exc


def _to_problem(error: Any, doc: YamlDocument | None) -> Problem:
    loc = tuple(error["loc"])
    path = _format_path(loc)
    location = doc.location(loc) if doc else None
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        suggestion = _closest_field(loc)
        if suggestion:
            message += f" — did you mean {suggestion}?"
        else:
            valid = ", ".join(_model_at(loc[:-1]).model_fields) if _model_at(loc[:-1]) else ""
            message += f" (valid keys here: {valid})" if valid else ""
    elif error["type"] == "missing":
        message = "required field is missing"
        location = (
            doc.location(loc[:-1]) if doc and len(loc) > 1 else (str(doc.path) if doc else None)
        )
    else:
        message = error["msg"]
        if "input" in error and not isinstance(error["input"], dict | list):
            message += f" (got {error['input']!r})"
    return Problem(path=path, message=message, location=location)


def _format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The section model that holds the fields at `loc` (None if it is not a model)."""
    model: type[BaseModel] = Recipe
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        inner = _section_type(field.annotation)
        if inner is None:
            return None
        model = inner
    return model


def _closest_field(loc: tuple[str | int, ...]) -> str | None:
    model = _model_at(loc[:-1])
    if model is None:
        return None
    matches = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    if not matches:
        return None
    return _format_path((*loc[:-1], matches[0]))


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as `Section`, `Section | None`, `list[Section]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


@dataclass(frozen=True)
class FieldDoc:
    """One recipe field as `astra recipe show` prints it."""

    path: str
    type: str
    default: str
    description: str


def describe_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> list[FieldDoc]:
    """Every field of the recipe (recursing into sections) with its default and description."""
    rows: list[FieldDoc] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        section = _section_type(field.annotation)
        if section is not None and typing.get_origin(field.annotation) is not list:
            rows.extend(describe_fields(section, prefix=f"{path}."))
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "null" if field.default is None else str(field.default)
        rows.append(
            FieldDoc(
                path=path,
                type=_type_name(field.annotation),
                default=default,
                description=field.description or "",
            )
        )
    return rows


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
