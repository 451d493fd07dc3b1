"""Go `text/template`, the language of Ollama's TEMPLATE, parsed and run in Python.

No maintained Python package implements Go templates, and we need them twice: to prove that
a translated chat template renders exactly what the Jinja original renders, and to serve a
model whose Modelfile brings a hand-written TEMPLATE the way Ollama would run it. This
covers what chat templates use: text and actions with `{{-`/`-}}` trimming, comments,
if/else if/else, range (with else, break, continue), with, variables (`:=` and `=`),
pipelines, parenthesized calls, fields on maps, and Go's built-in functions plus Ollama's
`json` and `currentDate`.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from astra_tune.errors import AstraError


class TemplateError(AstraError):
    """A Go template that does not parse or fails while rendering."""


# -- parse tree --------------------------------------------------------------------------


@dataclass
class Text:
    text: str


@dataclass
class Pipeline:
    commands: list[list[Any]]  # each command: operands (the first may be a function name)
    declare: list[str] = field(default_factory=list)  # `$x :=` (or `$i, $x :=` in range)
    assign: bool = False  # `$x = ...`


@dataclass
class Action:
    pipeline: Pipeline


@dataclass
class If:
    branches: list[tuple[Pipeline, list[Any]]]
    otherwise: list[Any] | None = None


@dataclass
class Range:
    pipeline: Pipeline
    body: list[Any]
    otherwise: list[Any] | None = None


@dataclass
class With:
    pipeline: Pipeline
    body: list[Any]
    otherwise: list[Any] | None = None


@dataclass
class Control:
    word: str  # "break" | "continue"


# Operands inside a command.
@dataclass
class Field:
    names: list[str]  # .A.B -> ["A", "B"]; "." alone -> []


@dataclass
class Variable:
    name: str  # "$" or "$x"
    names: list[str] = field(default_factory=list)


@dataclass
class Literal:
    value: Any


@dataclass
class Function:
    name: str


@dataclass
class Sub:
    pipeline: Pipeline
    names: list[str] = field(default_factory=list)  # (pipeline).Field


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\\n]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<char>'(?:[^'\\]|\\.)+')
    | (?P<declare>:=)
    | (?P<pipe>\|)
    | (?P<open>\()
    | (?P<close>\)(?:\.[A-Za-z_]\w*)*)
    | (?P<comma>,)
    | (?P<assign>=)
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+))
    | (?P<variable>\$\w*(?:\.[A-Za-z_]\w*)*)
    | (?P<field>(?:\.[A-Za-z_]\w*)+|\.)
    | (?P<ident>[A-Za-z_]\w*)
    )""",
    re.VERBOSE,
)


def parse(source: str) -> list[Any]:
    """The parse tree of a Go template; TemplateError names the line of a mistake."""
    items = _lex(source)
    nodes, end = _parse_list(items, 0, source, stop=())
    if end < len(items):
        word, line = items[end][1].split()[0], items[end][2]
        raise TemplateError(f"unexpected {{{{{word}}}}} at line {line}", where=f"line {line}")
    return nodes


def _lex(source: str) -> list[tuple[str, str, int]]:
    """("text" | "action", content, line) pieces, with trim markers applied."""
    pieces: list[tuple[str, str, int]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if match.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            pieces.append(("text", text, source.count("\n", 0, position) + 1))
        body = match.group(2).strip()
        line = source.count("\n", 0, match.start()) + 1
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"unclosed comment at line {line}", where=f"line {line}")
        elif not body:
            raise TemplateError(f"empty action at line {line}", where=f"line {line}")
        else:
            pieces.append(("action", body, line))
        trim_next = bool(match.group(3))
        position = match.end()
    rest = source[position:]
    if "{{" in rest:
        line = source.count("\n", 0, position + rest.index("{{")) + 1
        raise TemplateError(f"unclosed action at line {line}", where=f"line {line}")
    if trim_next:
        rest = rest.lstrip(" \t\r\n")
    if rest:
        pieces.append(("text", rest, source.count("\n", 0, position) + 1))
    return pieces


def _keyword(body: str) -> str:
    word = body.split(None, 1)[0] if body else ""
    return word if word in {"if", "else", "end", "range", "with", "break", "continue",
                            "define", "template", "block"} else ""  # fmt: skip


def _parse_list(
    items: list[tuple[str, str, int]],
    index: int,
    source: str,
    stop: tuple[str, ...],
    opener: tuple[str, int] = ("", 0),
) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while index < len(items):
        kind, body, line = items[index]
        if kind == "text":
            nodes.append(Text(body))
            index += 1
            continue
        word = _keyword(body)
        if word in stop:
            return nodes, index
        if word in ("else", "end"):
            raise TemplateError(f"unexpected {{{{{word}}}}} at line {line}", where=f"line {line}")
        if word in ("define", "template", "block"):
            raise TemplateError(
                f"{{{{{word}}}}} (line {line}) is not supported in chat templates",
                where=f"line {line}",
            )
        if word in ("break", "continue"):
            nodes.append(Control(word))
            index += 1
        elif word == "if":
            node, index = _parse_if(items, index, source)
            nodes.append(node)
        elif word in ("range", "with"):
            pipeline = _parse_pipeline(body[len(word) :], line)
            opener = (word, line)
            body_nodes, index = _parse_list(items, index + 1, source, ("else", "end"), opener)
            otherwise = None
            index = _expect(items, index, line, word)
            if _keyword(items[index][1]) == "else":
                chained = items[index][1][4:].strip()
                if chained:
                    here = items[index][2]
                    raise TemplateError(
                        f"{{{{else {chained}}}}} (line {here}) is not supported; nest it "
                        f"inside {{{{else}}}} instead",
                        where=f"line {here}",
                    )
                otherwise, index = _parse_list(items, index + 1, source, ("end",), opener)
                index = _expect(items, index, line, word)
            cls = Range if word == "range" else With
            nodes.append(cls(pipeline, body_nodes, otherwise))
            index += 1
        else:
            nodes.append(Action(_parse_pipeline(body, line)))
            index += 1
    if stop:
        word, line = opener
        raise TemplateError(
            f"{{{{{word}}}}} at line {line} has no {{{{end}}}}", where=f"line {line}"
        )
    return nodes, index


def _expect(items: list[tuple[str, str, int]], index: int, line: int, word: str) -> int:
    if index >= len(items):
        raise TemplateError(
            f"{{{{{word}}}}} at line {line} has no {{{{end}}}}", where=f"line {line}"
        )
    return index


def _parse_if(items: list[tuple[str, str, int]], index: int, source: str) -> tuple[If, int]:
    _, body, line = items[index]
    branches = []
    condition = _parse_pipeline(body[2:], line)
    while True:
        nodes, index = _parse_list(items, index + 1, source, ("else", "end"), ("if", line))
        branches.append((condition, nodes))
        index = _expect(items, index, line, "if")
        _, body, here = items[index]
        if _keyword(body) == "end":
            return If(branches), index + 1
        rest = body[4:].strip()
        if rest.startswith("if ") or rest.startswith("if\t"):
            condition = _parse_pipeline(rest[2:], here)
            continue
        otherwise, index = _parse_list(items, index + 1, source, ("end",), ("if", line))
        index = _expect(items, index, line, "if")
        return If(branches, otherwise), index + 1


def _tokens(text: str, line: int) -> list[tuple[str, str]]:
    tokens = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise TemplateError(
                f"cannot read {text[position:].strip()!r} in an action at line {line}",
                where=f"line {line}",
            )
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _parse_pipeline(text: str, line: int) -> Pipeline:
    tokens = _tokens(text, line)
    declare: list[str] = []
    assign = False
    # `$x :=`, `$i, $x :=` or `$x =` in front of the pipeline.
    for size in (4, 2):
        kinds = [k for k, _ in tokens[:size]]
        if size == 4 and kinds == ["variable", "comma", "variable", "declare"]:
            declare = [tokens[0][1], tokens[2][1]]
            tokens = tokens[4:]
            break
        if (
            size == 2
            and len(kinds) == 2
            and kinds[0] == "variable"
            and kinds[1]
            in (
                "declare",
                "assign",
            )
        ):
            declare = [tokens[0][1]]
            assign = kinds[1] == "assign"
            tokens = tokens[2:]
            break
    commands, rest = _parse_commands(tokens, 0, line)
    if rest != len(tokens):
        raise TemplateError(f"unexpected {tokens[rest][1]!r} at line {line}", where=f"line {line}")
    if not commands:
        raise TemplateError(f"missing value in an action at line {line}", where=f"line {line}")
    return Pipeline(commands, declare, assign)


def _parse_commands(
    tokens: list[tuple[str, str]], index: int, line: int
) -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "close":
            break
        if kind == "pipe":
            if not commands[-1]:
                raise TemplateError(f"empty command before '|' at line {line}")
            commands.append([])
            index += 1
            continue
        if kind == "open":
            inner, index = _parse_commands(tokens, index + 1, line)
            if index >= len(tokens) or tokens[index][0] != "close":
                raise TemplateError(f"unclosed '(' at line {line}", where=f"line {line}")
            names = tokens[index][1].split(".")[1:]
            commands[-1].append(Sub(Pipeline(inner), names))
            index += 1
            continue
        commands[-1].append(_operand(kind, value, line))
        index += 1
    if commands == [[]]:
        return [], index
    if not commands[-1]:
        raise TemplateError(f"missing command after '|' at line {line}", where=f"line {line}")
    return commands, index


def _operand(kind: str, value: str, line: int) -> Any:
    if kind == "string":
        return Literal(json.loads(value) if "\\x" not in value else _go_unquote(value))
    if kind == "raw":
        return Literal(value[1:-1])
    if kind == "char":
        return Literal(ord(_go_unquote('"' + value[1:-1] + '"')))
    if kind == "number":
        number = value.lower()
        if number.startswith(("0x", "-0x", "+0x")):
            return Literal(int(number, 16))
        return Literal(float(value) if any(c in number for c in ".e") else int(value))
    if kind == "variable":
        name, *names = value.split(".")
        return Variable(name, names)
    if kind == "field":
        return Field([n for n in value.split(".") if n])
    if kind == "ident":
        if value in ("true", "false"):
            return Literal(value == "true")
        if value == "nil":
            return Literal(None)
        if value not in FUNCTIONS:
            raise TemplateError(
                f'function "{value}" not defined (line {line})', where=f"line {line}"
            )
        return Function(value)
    raise TemplateError(f"unexpected {value!r} at line {line}", where=f"line {line}")


def _go_unquote(literal: str) -> str:
    body = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: f"\\u00{m.group(1)}", literal)
    return str(json.loads(body))


# -- evaluation --------------------------------------------------------------------------


class _Break(Exception):  # noqa: N818 - control flow, not an error
    pass


class _Continue(Exception):  # noqa: N818 - control flow, not an error
    pass


class _Stop(Exception):  # noqa: N818 - control flow: Ollama's cut after .Response
    pass


def truth(value: Any) -> bool:
    """Go's template truthiness: false, 0, nil and empty strings/slices/maps are false."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | tuple | dict):
        return bool(value)
    return True


def show(value: Any) -> str:
    """A value as Go's fmt %v prints it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{show(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64): shortest digits, exponent below 1e-4 or from 1e6."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits)) or "0"
    power = len(text) + int(exponent) - 1
    head = "-" if sign else ""
    if value == 0:
        return head + "0"
    if power < -4 or power >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{head}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    return head + format(Decimal(repr(abs(value))).normalize(), "f")


def _compare(name: str, a: Any, b: Any) -> bool:
    if name == "eq":
        return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)
    if name == "ne":
        return not (bool(a == b) and isinstance(a, bool) == isinstance(b, bool))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        raise TemplateError(f"{name}: incompatible types for comparison ({show(a)}, {show(b)})")
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "lt": lambda x, y: x < y,
        "le": lambda x, y: x <= y,
        "gt": lambda x, y: x > y,
        "ge": lambda x, y: x >= y,
    }
    return ops[name](a, b)


def _length(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict):
        return len(value) if not isinstance(value, str) else len(value.encode("utf-8"))
    raise TemplateError(f"len of {type(value).__name__} ({show(value)})")


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list | tuple | str):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise TemplateError(f"index out of range: {show(key)}")
            value = value[key]
        else:
            raise TemplateError(f"can't index item of type {type(value).__name__}")
    return value


def _slice(value: Any, *bounds: int) -> Any:
    if not isinstance(value, list | tuple | str):
        raise TemplateError(f"can't slice item of type {type(value).__name__}")
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else len(value)
    if not 0 <= low <= high <= len(value):
        raise TemplateError(f"slice index out of range: {low}:{high}")
    return value[low:high]


def _printf(form: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        verb = match.group(0)
        if verb == "%%":
            return "%"
        value = next(values)
        if verb == "%q":
            return json.dumps(value)
        if verb == "%d":
            return str(int(value))
        return show(value)

    return re.sub(r"%[-+# 0]*\d*(?:\.\d+)?[a-zA-Z%]", one, form)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "not": lambda x: not truth(x),
    "len": _length,
    "index": _index,
    "slice": _slice,
    "print": lambda *a: "".join(show(v) for v in a),
    "println": lambda *a: " ".join(show(v) for v in a) + "\n",
    "printf": _printf,
    "eq": lambda a, *b: any(_compare("eq", a, x) for x in b),
    "ne": lambda a, b: _compare("ne", a, b),
    "lt": lambda a, b: _compare("lt", a, b),
    "le": lambda a, b: _compare("le", a, b),
    "gt": lambda a, b: _compare("gt", a, b),
    "ge": lambda a, b: _compare("ge", a, b),
    "and": None,  # short-circuit: evaluated in _call
    "or": None,
    # Ollama's additions (template/template.go funcs).
    "json": _json,
    "currentDate": lambda: datetime.date.today().isoformat(),
    "yesterdayDate": lambda: (datetime.date.today() - datetime.timedelta(days=1)).isoformat(),
}


class _Scope:
    def __init__(self, root: Any) -> None:
        self.frames: list[dict[str, Any]] = [{"$": root}]

    def push(self) -> None:
        self.frames.append({})

    def pop(self) -> None:
        self.frames.pop()

    def declare(self, name: str, value: Any) -> None:
        self.frames[-1][name] = value

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"undefined variable: {name}")

    def get(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable: {name}")


class _Renderer:
    def __init__(self, root: Any, stop_at_response: bool = False) -> None:
        self.scope = _Scope(root)
        self.out: list[str] = []
        self.stop_at_response = stop_at_response

    def run(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(node.pipeline, dot)
                if not node.pipeline.declare:
                    self.out.append(show(value))
            elif isinstance(node, If):
                self._if(node, dot)
            elif isinstance(node, Range):
                self._range(node, dot)
            elif isinstance(node, With):
                self._with(node, dot)
            elif isinstance(node, Control):
                raise _Break() if node.word == "break" else _Continue()

    def _block(self, nodes: list[Any], dot: Any) -> None:
        self.scope.push()
        try:
            self.run(nodes, dot)
        finally:
            self.scope.pop()

    def _if(self, node: If, dot: Any) -> None:
        for condition, body in node.branches:
            self.scope.push()
            try:
                if truth(self.pipeline(condition, dot)):
                    self.run(body, dot)
                    return
            finally:
                self.scope.pop()
        if node.otherwise is not None:
            self._block(node.otherwise, dot)

    def _with(self, node: With, dot: Any) -> None:
        self.scope.push()
        try:
            value = self.pipeline(node.pipeline, dot)
            if truth(value):
                self.run(node.body, value)
                return
        finally:
            self.scope.pop()
        if node.otherwise is not None:
            self._block(node.otherwise, dot)

    def _range(self, node: Range, dot: Any) -> None:
        pipeline = node.pipeline
        self.scope.push()
        try:
            value = self.pipeline(Pipeline(pipeline.commands), dot)
            pairs: list[tuple[Any, Any]]
            if value is None:
                pairs = []
            elif isinstance(value, dict):
                pairs = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, list | tuple):
                pairs = list(enumerate(value))
            elif isinstance(value, int) and not isinstance(value, bool):
                pairs = [(i, i) for i in range(value)]
            else:
                raise TemplateError(f"range can't iterate over {show(value)}")
            for key, item in pairs:
                self.scope.push()
                if len(pipeline.declare) == 2:
                    self.scope.declare(pipeline.declare[0], key)
                    self.scope.declare(pipeline.declare[1], item)
                elif pipeline.declare:
                    self.scope.declare(pipeline.declare[0], item)
                try:
                    self.run(node.body, item)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    self.scope.pop()
        finally:
            self.scope.pop()
        if not pairs and node.otherwise is not None:
            self._block(node.otherwise, dot)

    def pipeline(self, pipeline: Pipeline, dot: Any) -> Any:
        value: Any = _MISSING
        for command in pipeline.commands:
            value = self._command(command, dot, value)
        if pipeline.declare:
            name = pipeline.declare[-1]
            if pipeline.assign:
                self.scope.assign(name, value)
            else:
                self.scope.declare(name, value)
        return value

    def _command(self, command: list[Any], dot: Any, piped: Any) -> Any:
        head, *args = command
        if isinstance(head, Function):
            return self._call(head.name, args, dot, piped)
        if args:
            raise TemplateError(f"can't give arguments to a non-function {show(head)}")
        if piped is not _MISSING:
            raise TemplateError("can't pipe a value into a non-function")
        return self._operand(head, dot)

    def _call(self, name: str, args: list[Any], dot: Any, piped: Any) -> Any:
        def values() -> Iterator[Any]:
            for arg in args:
                yield self._operand(arg, dot)
            if piped is not _MISSING:
                yield piped

        if name in ("and", "or"):
            last: Any = None
            for value in values():
                last = value
                if truth(value) != (name == "and"):
                    return value
            return last
        try:
            return FUNCTIONS[name](*values())
        except TypeError as exc:
            raise TemplateError(f"wrong number of arguments for {name}: {exc}") from exc

    def _operand(self, operand: Any, dot: Any) -> Any:
        if isinstance(operand, Literal):
            return operand.value
        if isinstance(operand, Field):
            return self._fields(dot, operand.names)
        if isinstance(operand, Variable):
            return self._fields(self.scope.get(operand.name), operand.names)
        if isinstance(operand, Sub):
            return self._fields(self.pipeline(operand.pipeline, dot), operand.names)
        if isinstance(operand, Function):
            return self._call(operand.name, [], dot, _MISSING)
        raise TemplateError(f"unexpected operand {operand!r}")

    def _fields(self, value: Any, names: list[str]) -> Any:
        for name in names:
            if value is None:
                raise TemplateError(f"nil pointer evaluating .{name}")
            if not isinstance(value, dict):
                raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
            value = value.get(name)
            if name == "Response" and self.stop_at_response:
                self.out.append(show(value) if value is not None else "")
                raise _Stop()
        return value


_MISSING = object()


def execute(nodes: list[Any], data: Any, *, stop_at_response: bool = False) -> str:
    """Run a parsed template over `data` (maps for structs, as Ollama passes them)."""
    renderer = _Renderer(data, stop_at_response)
    try:
        renderer.run(nodes, data)
    except _Stop:
        pass
    except (_Break, _Continue) as exc:
        raise TemplateError(f"{{{{{type(exc).__name__[1:].lower()}}}}} outside range") from exc
    return "".join(renderer.out)


def field_names(nodes: list[Any]) -> set[str]:
    """Every field name the template reads (Ollama decides legacy vs .Messages from these)."""
    names: set[str] = set()

    def operands(pipeline: Pipeline) -> None:
        for command in pipeline.commands:
            for operand in command:
                if isinstance(operand, Field | Variable):
                    names.update(operand.names)
                elif isinstance(operand, Sub):
                    names.update(operand.names)
                    operands(operand.pipeline)

    def walk(items: list[Any]) -> None:
        for node in items:
            if isinstance(node, Action):
                operands(node.pipeline)
            elif isinstance(node, If):
                for condition, body in node.branches:
                    operands(condition)
                    walk(body)
                walk(node.otherwise or [])
            elif isinstance(node, Range | With):
                operands(node.pipeline)
                walk(node.body)
                walk(node.otherwise or [])

    walk(nodes)
    return names
