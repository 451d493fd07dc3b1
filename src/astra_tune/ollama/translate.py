"""Hugging Face Jinja chat templates -> Ollama Go TEMPLATEs, derived and then proven.

Unsloth and others look the Ollama template up by model name. We derive it from what the
Jinja template renders on probe conversations: the text around each role's content, where
the system prompt goes (its own block, or folded into the first or last user turn), any
default system prompt, and the generation prompt. Then we render a set of conversations
through both templates and refuse the translation unless every string is identical, so a
template we have never seen either works exactly or is refused with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError as JinjaError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from astra_tune.errors import AstraError
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.render import GoChatTemplate

# Content that survives strip()/trim and cannot be mistaken for template text.
SYS, U1, A1, U2, A2, U3 = "SYSqzx7", "USRqzx1", "ASTqzx1", "USRqzx2", "ASTqzx2", "USRqzx3"

Message = dict[str, str]


HAND_WRITTEN = "write the TEMPLATE by hand and pass it with --template-file"


class TranslationError(AstraError):
    """The Jinja template cannot be expressed faithfully as an Ollama TEMPLATE."""


@dataclass(frozen=True)
class Check:
    """One conversation rendered through both templates."""

    name: str
    jinja: str
    go: str

    @property
    def same(self) -> bool:
        return self.jinja == self.go


@dataclass
class Translation:
    """An Ollama TEMPLATE with its stop strings, and the evidence that it is faithful."""

    template: str
    stops: list[str]
    style: str  # "block" | "first-user" | "last-user" | "none" (no system role)
    default_system: str | None = None
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def modelfile_lines(self) -> str:
        """The TEMPLATE block and its PARAMETER stop lines, in Modelfile syntax."""
        lines = [f'TEMPLATE """{self.template}"""']
        from astra_tune.ollama.modelfile import quote

        lines += [f"PARAMETER stop {quote(stop)}" for stop in self.stops]
        return "\n".join(lines) + "\n"


class JinjaChat:
    """A chat template rendered the way transformers renders it (apply_chat_template)."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent)
        try:
            self.template = env.from_string(source)
        except JinjaError as exc:
            raise TranslationError(f"the Jinja chat template does not parse: {exc}") from exc
        self.bos_token = bos_token
        self.eos_token = eos_token
        # Only a BOS the template writes as {{ bos_token }} is the runtime's to add: SmolLM2
        # declares <|im_start|> as its BOS, and there the leading <|im_start|> is text.
        try:
            marker = "\x02bos\x02"
            probe = self.render([{"role": "user", "content": "x"}], False, bos_token=marker)
            self.leading_bos = bool(bos_token) and probe.startswith(marker)
        except JinjaError:
            self.leading_bos = False

    def render(
        self,
        messages: Sequence[Message],
        generation_prompt: bool,
        *,
        bos_token: str | None = None,
    ) -> str:
        def raise_exception(message: str) -> None:
            raise JinjaError(message)

        return self.template.render(
            messages=list(messages),
            add_generation_prompt=generation_prompt,
            bos_token=self.bos_token if bos_token is None else bos_token,
            eos_token=self.eos_token,
            raise_exception=raise_exception,
            strftime_now=lambda fmt: "",
        )

    def prompt(self, messages: Sequence[Message], *, generation_prompt: bool = True) -> str:
        """The rendering without the template's leading BOS, which the runtime adds."""
        text = self.render(messages, generation_prompt)
        if self.leading_bos and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text


def translate(source: str, *, bos_token: str = "", eos_token: str = "") -> Translation:
    """Derive the Ollama TEMPLATE for a Jinja chat template and prove it (or refuse)."""
    chat = JinjaChat(source, bos_token, eos_token)
    parts = _derive(chat)
    translation = Translation(
        template=_go_source(parts),
        stops=_stops(parts, eos_token),
        style=parts["style"],
        default_system=parts.get("default_text"),
        notes=parts["notes"],
    )
    translation.checks = prove(chat, translation.template, system=parts["style"] != "none")
    bad = [check for check in translation.checks if not check.same]
    if bad:
        raise TranslationError(
            f"the derived template renders {len(bad)} of {len(translation.checks)} probe "
            f"conversations differently, first {bad[0].name!r}: {_first_difference(bad[0])}",
            fix=HAND_WRITTEN,
        )
    return translation


def prove(chat: JinjaChat, template: str, *, system: bool = True) -> list[Check]:
    """Render the probe conversations through both templates, side by side."""
    go = GoChatTemplate(template)
    text = "Line one,\nline two: {{ not a template }} — ünïcode ✓"
    cases: list[tuple[str, list[Message]]] = [
        ("user only", [_m("user", "Hello there!")]),
        (
            "multi-turn",
            [_m("user", "Hi"), _m("assistant", "Hello! How can I help?"), _m("user", text)],
        ),
        (
            "three turns",
            [
                _m("user", "a"),
                _m("assistant", "b"),
                _m("user", "c"),
                _m("assistant", "d"),
                _m("user", "e"),
            ],
        ),
    ]
    if system:
        cases += [
            ("system + user", [_m("system", "Be brief."), _m("user", "Hello there!")]),
            (
                "system + multi-turn",
                [
                    _m("system", "You answer in French.\nAlways."),
                    _m("user", "Hi"),
                    _m("assistant", "Salut !"),
                    _m("user", text),
                ],
            ),
            ("empty system", [_m("system", ""), _m("user", "Hello there!")]),
            (
                "empty system + multi-turn",
                [_m("system", ""), _m("user", "Hi"), _m("assistant", "Hello."), _m("user", "Bye")],
            ),
        ]
    checks = []
    for name, messages in cases:
        checks.append(Check(name, chat.prompt(messages), _go(go, messages)))
    # A conversation that ends with the assistant is continued, not closed: Ollama renders
    # it open (prefill), which must be a prefix of the closed Jinja rendering.
    for name, messages in [("assistant prefill", [_m("user", "Hi"), _m("assistant", "Hello")])]:
        jinja = chat.prompt(messages, generation_prompt=False)
        rendered = _go(go, messages)
        checks.append(
            Check(name, jinja[: len(rendered)] if jinja.startswith(rendered) else jinja, rendered)
        )
    return checks


def _go(go: GoChatTemplate, messages: list[Message]) -> str:
    try:
        return go.render(messages)
    except TemplateError as exc:
        return f"<error: {exc.what}>"


def _m(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _first_difference(check: Check) -> str:
    a, b = check.jinja, check.go
    at = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return (
        f"at character {at}, Jinja has {a[max(0, at - 20) : at + 30]!r}, "
        f"the Go template has {b[max(0, at - 20) : at + 30]!r}"
    )


# -- derivation --------------------------------------------------------------------------


def _split(text: str, marker: str, what: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise TranslationError(
            f"the {what} content appears {text.count(marker)} times in the rendering, not once",
            fix=HAND_WRITTEN,
        )
    before, after = text.split(marker)
    return before, after


def _between(text: str, first: str, second: str) -> str:
    return text[text.index(first) + len(first) : text.index(second)]


def _common_prefix(a: str, b: str) -> str:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


def _common_suffix(*texts: str) -> str:
    size = 0
    shortest = min(len(t) for t in texts)
    while size < shortest and len({t[len(t) - size - 1] for t in texts}) == 1:
        size += 1
    return texts[0][len(texts[0]) - size :] if size else ""


def _refuse(reason: str) -> TranslationError:
    return TranslationError(
        reason, fix="write the TEMPLATE by hand and pass it with --template-file"
    )


def _render(chat: JinjaChat, messages: list[Message], generation: bool) -> str:
    try:
        return chat.prompt(messages, generation_prompt=generation)
    except JinjaError as exc:
        raise _refuse(f"the template rejects a plain user/assistant conversation: {exc}") from exc


Render = Callable[[list["Message"]], str]


def _derive(chat: JinjaChat) -> dict[str, Any]:
    """The pieces of a template, read off probe conversations rendered through it."""
    user_only, closing, generation = _generation_split(chat)

    def render(messages: list[Message]) -> str:
        text = _render(chat, messages, False)
        return text[: len(text) - len(closing)] if closing and text.endswith(closing) else text

    turns = _turn_texts(render, user_only)
    notes = _whitespace_notes(render)
    system_user, system_four = _system_renders(render, notes)
    style, parts = _user_open_and_system(turns, system_user, system_four)
    assistant_close = turns["after_assistant"][
        : len(turns["after_assistant"]) - len(parts["user_open"])
    ]
    parts.update(
        style=style,
        notes=notes,
        generation=generation,
        user_close=turns["user_close"],
        assistant_open=turns["assistant_open"],
        assistant_close=assistant_close,
        assistant_end=turns["assistant_end"],
        empty_absent=_empty_system_is_absent(render, style, user_only, system_user),
    )
    return parts


def _generation_split(chat: JinjaChat) -> tuple[str, str, str]:
    """A one-user-turn prompt without the generation prompt, a closing marker only finished
    conversations get, and the generation prompt itself."""
    with_prompt = _render(chat, [_m("user", U1)], True)
    user_only = _render(chat, [_m("user", U1)], False)
    # Some templates end a finished conversation with a marker (Phi-3: <|endoftext|>) that
    # a prompt for generation never has; Ollama only renders prompts, so it is set aside.
    shared = _common_prefix(user_only, with_prompt)
    opened = max(shared.rfind("<"), shared.rfind("["))
    if len(shared) < len(user_only) and opened > max(shared.rfind(">"), shared.rfind("]")):
        shared = shared[:opened]  # not in the middle of a special token like "<|end"
    closing = user_only[len(shared) :]
    if closing and U1 not in shared:
        raise _refuse("adding the generation prompt changes the text before it")
    return shared, closing, with_prompt[len(shared) :]


def _turn_texts(render: Render, user_only: str) -> dict[str, str]:
    """The text around user and assistant turns, from one- to three-turn conversations."""
    before_user, user_close = _split(user_only, U1, "user")
    pair = render([_m("user", U1), _m("assistant", A1)])
    between = _between(pair, U1, A1)
    if not between.startswith(user_close):
        raise _refuse("the text after a user turn depends on what follows it")
    three = render([_m("user", U1), _m("assistant", A1), _m("user", U2)])
    return {
        "before_user": before_user,
        "user_close": user_close,
        "assistant_open": between[len(user_close) :],
        "assistant_end": pair[pair.index(A1) + len(A1) :],
        "after_assistant": _between(three, A1, U2),
    }


def _whitespace_notes(render: Render) -> list[str]:
    padded = render([_m("user", f"  {U1}  ")])
    if f"  {U1}  " in padded:
        return []
    return [
        "the Jinja template strips whitespace around message content and Go templates "
        "cannot; content with leading or trailing whitespace renders differently"
    ]


def _system_renders(render: Render, notes: list[str]) -> tuple[str, str]:
    """System + user, and system + three turns ("" when the template has no system role)."""
    try:
        system_user = render([_m("system", SYS), _m("user", U1)])
        system_four = render(
            [_m("system", SYS), _m("user", U1), _m("assistant", A1), _m("user", U2)]
        )
    except TranslationError:
        notes.append(
            "the template has no system role (it rejects system messages); "
            "a SYSTEM prompt is dropped"
        )
        return "", ""
    if SYS not in system_user:
        raise _refuse("the template drops the system message")
    return system_user, system_four


def _user_open_and_system(
    turns: dict[str, str], system_user: str, system_four: str
) -> tuple[str, dict[str, Any]]:
    """The text that opens every user turn, and where the system prompt goes: its own
    block, or folded into the first or the last user turn ("none": no system role)."""
    before_user, after_assistant = turns["before_user"], turns["after_assistant"]
    candidates = []
    if after_assistant.startswith(turns["assistant_end"]):
        candidates.append(after_assistant[len(turns["assistant_end"]) :])
    candidates.append(_common_suffix(after_assistant, before_user))
    for user_open in candidates:
        if not (before_user.endswith(user_open) and after_assistant.endswith(user_open)):
            continue
        preamble = before_user[: len(before_user) - len(user_open)]
        parts: dict[str, Any] = {"user_open": user_open, "preamble": preamble}
        if not system_user:
            if preamble:
                parts["default_text"] = preamble
            return "none", parts
        placed = _system_placement(parts, before_user, system_user, system_four)
        if placed is not None:
            return placed, parts
    raise _refuse(
        "no consistent text opens a user turn (the first and later user turns start differently)"
    )


def _system_placement(
    parts: dict[str, Any], before_user: str, system_user: str, system_four: str
) -> str | None:
    """Where the system prompt goes for this user opening (filling `parts`), or None."""
    user_open, preamble = parts["user_open"], parts["preamble"]
    pre_system, mid = _split(system_user, SYS, "system")[0], _between(system_user, SYS, U1)
    if system_user.index(SYS) > system_user.index(U1):
        raise _refuse("the system prompt comes after the first user message")
    if user_open and pre_system.startswith(before_user) and not preamble:
        parts.update(system_open=pre_system[len(before_user) :], system_close=mid)
        return "first-user" if system_four.index(SYS) < system_four.index(U1) else "last-user"
    if not mid.endswith(user_open):
        return None
    system_close = mid[: len(mid) - len(user_open)]
    parts.update(system_open=pre_system, system_close=system_close)
    if preamble:
        if preamble.startswith(pre_system) and preamble.endswith(system_close):
            end = len(preamble) - len(system_close)
            parts["default_text"] = preamble[len(pre_system) : end]
        else:
            parts["default_text"] = preamble
    return "block"


def _empty_system_is_absent(render: Render, style: str, user_only: str, system_user: str) -> bool:
    """Whether an empty system message renders as no system message at all."""
    if style == "none":
        return False
    try:
        empty = render([_m("system", ""), _m("user", U1)])
    except TranslationError:
        empty = user_only
    if empty == user_only:
        return True
    if empty != system_user.replace(SYS, ""):
        raise _refuse("an empty system message renders neither as absent nor as empty")
    return False


# -- Go source ---------------------------------------------------------------------------


class _Builder:
    """Go template text from actions and literal pieces.

    Layout newlines go only between two actions, where a `{{-` removes them again; a
    literal piece is never next to a trim marker, so its own whitespace survives.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def act(self, body: str) -> _Builder:
        self.items.append(("act", body))
        return self

    def text(self, piece: str) -> _Builder:
        if piece:
            if "{{" in piece:  # a literal "{{" must come from a string action
                self.items.append(("act", json.dumps(piece)))
            else:
                self.items.append(("text", piece))
        return self

    def source(self) -> str:
        out = []
        previous = "text"
        for kind, body in self.items:
            if kind == "act":
                if previous == "act" and out:
                    out.append("\n{{- " + body + " }}")
                else:
                    out.append("{{ " + body + " }}")
            else:
                out.append(body)
            previous = kind
        text = "".join(out)
        return "{{-" + text[2:] if text.startswith("{{ ") else text


def _go_source(parts: dict[str, Any]) -> str:
    b = _Builder()
    style = parts["style"]
    has_system = (
        ".System"
        if parts["empty_absent"]
        else '(and .Messages (eq (index .Messages 0).Role "system"))'
    )
    if parts["preamble"]:
        if style == "none":
            b.text(parts["preamble"])
        else:
            b.act(f"if not {has_system}").text(parts["preamble"]).act("end")
    b.act("range $i, $_ := .Messages")
    b.act("$last := eq (len (slice $.Messages $i)) 1")
    first = True
    if style == "block":
        b.act('if eq .Role "system"')
        if parts["empty_absent"]:
            b.act("if .Content")
        b.text(parts["system_open"]).act(".Content").text(parts["system_close"])
        if parts["empty_absent"]:
            b.act("end")
        first = False
    b.act(("if" if first else "else if") + ' eq .Role "user"').text(parts["user_open"])
    if style in ("first-user", "last-user"):
        where = "(eq $i 1)" if style == "first-user" else "(le (len (slice $.Messages $i)) 2)"
        if parts["empty_absent"]:
            condition = f"and $.System {where}"
        else:
            condition = f'and (eq (index $.Messages 0).Role "system") {where}'
        b.act(f"if {condition}").text(parts["system_open"]).act("$.System")
        b.text(parts["system_close"]).act("end")
    b.act(".Content").text(parts["user_close"])
    if parts["generation"]:
        b.act("if $last").text(parts["generation"]).act("end")
    b.act('else if eq .Role "assistant"').text(parts["assistant_open"]).act(".Content")
    if parts["assistant_close"]:
        b.act("if not $last").text(parts["assistant_close"]).act("end")
    b.act("end").act("end")
    return b.source()


_SPECIAL = re.compile(r"<\|?[^<>\s|]+\|?>|\[/?[A-Z_]+\]")


def _stops(parts: dict[str, Any], eos_token: str) -> list[str]:
    """End-of-turn marker, the eos token, and the marker that would open a new user turn."""
    stops: list[str] = []
    for piece in (parts["assistant_end"], parts["assistant_close"]):
        stripped = piece.strip()
        match = _SPECIAL.match(stripped)
        if match:
            stops.append(match.group(0))
        elif stripped:
            stops.append(stripped.splitlines()[0])
    if eos_token:
        stops.append(eos_token)
    user_open = parts["user_open"].strip()
    match = _SPECIAL.search(user_open)
    if match:
        stops.append(match.group(0))
    elif user_open:
        stops.append(user_open.splitlines()[0])
    return list(dict.fromkeys(s for s in stops if s))
