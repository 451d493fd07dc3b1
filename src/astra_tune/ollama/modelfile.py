"""Ollama Modelfiles: parse them with Ollama's rules, validate parameters, write them.

Ollama's parser (parser/parser.go): one command per line, case-insensitive; `#` starts a
comment line; a value is the rest of the line, a "quoted" string, or a `\"\"\"` block that
may span lines; PARAMETER may repeat (repeated `stop`s accumulate); MESSAGE takes a role
and the content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from astra_tune.errors import AstraError

COMMANDS = ("from", "adapter", "template", "system", "parameter", "license", "message", "requires")
ROLES = ("system", "user", "assistant", "tool")

# Ollama's option names and their types (api/types.go Options and Runner).
PARAMETERS: dict[str, type] = {
    "num_ctx": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "num_thread": int,
    "use_mmap": bool,
    "num_keep": int,
    "seed": int,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_last_n": int,
    "temperature": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "mirostat": int,
    "mirostat_tau": float,
    "mirostat_eta": float,
    "penalize_newline": bool,
    "stop": list,
}


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false"}


class ModelfileError(AstraError):
    """A Modelfile that does not parse, or a parameter Ollama would reject."""


@dataclass
class Modelfile:
    """The commands of one Modelfile, in the form `ollama create` reads."""

    from_: str
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)

    def text(self, header: str | None = None) -> str:
        """The Modelfile as `ollama create -f` reads it."""
        lines = [f"# {line}" for line in (header or "").splitlines()]
        lines.append(f"FROM {_value(self.from_)}")
        lines += [f"ADAPTER {_value(adapter)}" for adapter in self.adapters]
        if self.template is not None:
            lines.append(f"TEMPLATE {_block(self.template)}")
        for name, value in self.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {name} {_parameter_text(item)}")
        if self.system is not None:
            lines.append(f"SYSTEM {_block(self.system)}")
        lines += [f"LICENSE {_block(text)}" for text in self.license]
        lines += [f"MESSAGE {m['role']} {_block(m['content'])}" for m in self.messages]
        return "\n".join(lines) + "\n"


def _value(text: str) -> str:
    return quote(text) if (not text or text != text.strip() or "\n" in text) else text


def quote(text: str) -> str:
    """A value as Ollama's parser reads it back: it strips quotes and unescapes nothing,
    so text goes in verbatim, in \"\"\" when it holds a quote or a line break."""
    if '"' not in text and "\n" not in text:
        return f'"{text}"'
    return _block(text)


def _block(text: str) -> str:
    if '"""' in text or text.endswith('"'):
        raise ModelfileError(
            'a Modelfile value cannot contain """ or end with "',
            fix="remove the triple quote from the text",
        )
    return f'"""{text}"""'


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return str(value)


def parse_parameter(name: str, raw: Any, where: str, noun: str = "parameter") -> Any:
    """A parameter value checked and converted by Ollama's type for `name`."""
    key = name.lower()
    if key not in PARAMETERS:
        raise ModelfileError(
            f"unknown {noun} {name!r}",
            where=where,
            fix=f"Ollama {noun}s: {', '.join(sorted(PARAMETERS))}",
        )
    kind = PARAMETERS[key]
    if kind is list:
        text = raw if isinstance(raw, str) else None
        if text is None:
            if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
                return list(raw)
            raise ModelfileError(f"stop must be a string, not {raw!r}", where=where)
        return [text]
    text = str(raw).strip() if not isinstance(raw, bool | int | float) else raw
    try:
        if kind is bool:
            if isinstance(text, bool):
                return text
            if str(text).lower() in ("true", "1"):
                return True
            if str(text).lower() in ("false", "0"):
                return False
            raise ValueError(text)
        if kind is int:
            if isinstance(text, float) and not text.is_integer():
                raise ValueError(text)
            return int(text)
        return float(text)
    except ValueError:
        raise ModelfileError(
            f"{noun} {key} must be {_TYPE_WORDS[kind]}, not {raw!r}",
            where=where,
        ) from None


def _unquote(text: str) -> str:
    # Ollama strips the quotes and keeps everything between them as written.
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def parse(text: str, source: str = "Modelfile") -> Modelfile:
    """A Modelfile's commands; errors say `source:line` and what is wrong."""
    commands: list[tuple[str, str, int]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        stripped = line.strip()
        index += 1
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            rest = more + " " + rest
        command = word.lower()
        if command not in COMMANDS:
            raise ModelfileError(
                f"unknown command {word!r}",
                where=f"{source}:{number}",
                fix=f"Modelfile commands: {', '.join(c.upper() for c in COMMANDS)}",
            )
        rest = rest.strip()
        if command == "parameter" or command == "message":
            head, _, rest = rest.partition(" ")
            rest = head + " " + rest.lstrip() if rest else head
        opening = rest.partition(" ")[2].lstrip() if command in ("parameter", "message") else rest
        if (
            opening.startswith('"')
            and not opening.startswith('"""')
            and (len(opening) == 1 or not opening.endswith('"'))
        ):
            # A "…" value that goes on over the next lines, up to a line ending in ".
            rest, index = _read_on(lines, index, rest, '"', source, number)
        elif '"""' in rest:
            start = rest.index('"""')
            body, index = _read_on(lines, index, rest[start + 3 :], '"""', source, number)
            value, _, after = body.partition('"""')
            if after.strip():
                raise ModelfileError(
                    f'unexpected text after the closing """: {after.strip()!r}',
                    where=f"{source}:{number}",
                )
            rest = rest[:start] + "\x00" + value
        commands.append((command, rest, number))
    return _build(commands, source)


def _read_on(
    lines: list[str], index: int, text: str, mark: str, source: str, number: int
) -> tuple[str, int]:
    """`text` continued over the following lines until its closing `mark`."""

    def closed(value: str) -> bool:
        return value.rstrip().endswith('"') if mark == '"' else '"""' in value

    while not closed(text) or (mark == '"' and text.count("\n") == 0):
        if index >= len(lines):
            raise ModelfileError(
                f"a {mark} value is never closed",
                where=f"{source}:{number}",
                fix=f"end the value with {mark}",
            )
        text += "\n" + lines[index]
        index += 1
    return text, index


def _build(commands: list[tuple[str, str, int]], source: str) -> Modelfile:
    modelfile: Modelfile | None = None
    pending: list[tuple[str, str, int]] = []
    for command, rest, number in commands:
        if command == "from":
            if modelfile is not None:
                raise ModelfileError("more than one FROM", where=f"{source}:{number}")
            modelfile = Modelfile(from_=_plain(rest, source, number))
        else:
            pending.append((command, rest, number))
    if modelfile is None:
        raise ModelfileError(
            "the Modelfile has no FROM line",
            where=source,
            fix="add FROM with a model name or a .gguf path",
        )
    for command, rest, number in pending:
        _apply(modelfile, command, rest, source, number)
    return modelfile


def _apply(modelfile: Modelfile, command: str, rest: str, source: str, number: int) -> None:
    """One command other than FROM, applied to the Modelfile being built."""
    where = f"{source}:{number}"
    if command == "adapter":
        modelfile.adapters.append(_plain(rest, source, number))
    elif command == "template":
        modelfile.template = _text(rest)
    elif command == "system":
        modelfile.system = _text(rest)
    elif command == "license":
        modelfile.license.append(_text(rest))
    elif command == "parameter":
        name, _, value = rest.partition(" ")
        if not value.strip() and "\x00" not in rest:
            raise ModelfileError(f"PARAMETER {name} has no value", where=where)
        parsed = parse_parameter(name, _text(value), where)
        key = name.lower()
        if key == "stop":
            modelfile.parameters.setdefault("stop", []).extend(parsed)
        else:
            modelfile.parameters[key] = parsed
    elif command == "message":
        role, _, content = rest.partition(" ")
        if role.lower() not in ROLES:
            raise ModelfileError(
                f"invalid message role {role!r}", where=where, fix=f"use one of {', '.join(ROLES)}"
            )
        modelfile.messages.append({"role": role.lower(), "content": _text(content)})
    # "requires" names the minimum Ollama version: nothing to check here.


def _text(rest: str) -> str:
    if "\x00" in rest:
        return rest.split("\x00", 1)[1]
    return _unquote(rest)


def _plain(rest: str, source: str, number: int) -> str:
    value = _text(rest).strip()
    if not value:
        raise ModelfileError("the command needs a value", where=f"{source}:{number}")
    return value


def parameter_pairs(pairs: list[str]) -> dict[str, Any]:
    """`--param name=value` options as validated parameters (repeated stops accumulate)."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ModelfileError(
                f"--param {pair!r} is not NAME=VALUE", where="--param", fix="e.g. temperature=0.7"
            )
        parsed = parse_parameter(name.strip(), _unquote(value), f"--param {name.strip()}")
        if name.strip().lower() == "stop":
            parameters.setdefault("stop", []).extend(parsed)
        else:
            parameters[name.strip().lower()] = parsed
    return parameters
