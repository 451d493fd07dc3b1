"""Go text/template semantics, as Ollama runs TEMPLATEs."""

from __future__ import annotations

from typing import Any

import pytest

from astra_tune.ollama.gotemplate import TemplateError, execute, parse
from astra_tune.ollama.render import GoChatTemplate, collate


def run(source: str, data: Any = None) -> str:
    return execute(parse(source), data if data is not None else {})


def test_trim_markers_remove_all_adjacent_whitespace_and_nothing_else() -> None:
    assert run("a  \n\t {{- 1 -}} \n  b") == "a1b"
    assert run("a {{ 1 }} b") == "a 1 b"
    assert run("a\n{{- /* a comment */ -}}\nb") == "ab"
    assert run("x{{/* only a comment */}}y") == "xy"


def test_if_else_if_else_and_truthiness() -> None:
    source = '{{ if eq .R "user" }}U{{ else if eq .R "assistant" }}A{{ else }}?{{ end }}'
    assert [run(source, {"R": r}) for r in ("user", "assistant", "tool")] == ["U", "A", "?"]
    for falsy in ("", 0, [], {}, None, False):
        assert run("{{ if .X }}yes{{ else }}no{{ end }}", {"X": falsy}) == "no"
    for truthy in ("a", 1, [0], {"k": 1}, True):
        assert run("{{ if .X }}yes{{ else }}no{{ end }}", {"X": truthy}) == "yes"


def test_range_with_index_variables_and_root() -> None:
    data = {"Messages": [{"C": "a"}, {"C": "b"}, {"C": "c"}]}
    source = (
        "{{ range $i, $m := .Messages }}{{ $i }}{{ $m.C }}"
        "{{ if eq (len (slice $.Messages $i)) 1 }}!{{ end }}{{ end }}"
    )
    assert run(source, data) == "0a1b2c!"
    assert run("{{ range .Messages }}{{ .C }}{{ else }}none{{ end }}", {"Messages": []}) == "none"
    assert run("{{ range .Messages }}{{ if eq .C \"b\" }}{{ break }}{{ end }}{{ .C }}{{ end }}",
               data) == "a"  # fmt: skip
    assert run("{{ range .Messages }}{{ if eq .C \"b\" }}{{ continue }}{{ end }}{{ .C }}{{ end }}",
               data) == "ac"  # fmt: skip


def test_variables_assign_across_range_and_scope_ends_with_block() -> None:
    source = (
        '{{ $last := "" }}{{ range .Messages }}{{ $last = .C }}{{ end }}{{ $last }}'
        '{{ if true }}{{ $inner := "x" }}{{ end }}'
    )
    assert run(source, {"Messages": [{"C": "a"}, {"C": "z"}]}) == "z"
    with pytest.raises(TemplateError, match="undefined variable"):
        run('{{ if true }}{{ $inner := "x" }}{{ end }}{{ $inner }}')


def test_functions() -> None:
    assert run('{{ eq .A "x" "y" "z" }}', {"A": "z"}) == "true"
    assert run('{{ and 1 0 2 }} {{ or 0 "" 3 }} {{ not 0 }}') == "0 3 true"
    # and/or stop at the first deciding value, so the index is never evaluated.
    assert run("{{ if and .M (eq (index .M 0) 1) }}y{{ else }}n{{ end }}", {"M": []}) == "n"
    assert run('{{ index .M 1 }} {{ index .D "k" }}', {"M": [1, 2], "D": {"k": "v"}}) == "2 v"
    assert run('{{ len "héllo" }} {{ len .M }}', {"M": [1, 2, 3]}) == "6 3"  # bytes, as Go
    assert run('{{ printf "%s=%d %q" "a" 3 "b" }}') == 'a=3 "b"'
    assert run('{{ "a" | printf "%s!" }}') == "a!"
    assert run("{{ json .M }}", {"M": {"a": [1, "é"]}}) == '{"a":[1,"é"]}'
    assert run("{{ 0.5 }} {{ 3.0 }} {{ 1e8 }} {{ true }} {{ .Missing }}", {}) == (
        "0.5 3 1e+08 true <no value>"
    )
    with pytest.raises(TemplateError, match="incompatible types"):
        run('{{ lt 1 "a" }}')


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("a\n{{ if .X }}b", "line 2"),
        ("{{ end }}", "unexpected {{end}}"),
        ("a\nb {{ .X ", "unclosed action at line 2"),
        ("{{ frobnicate 1 }}", 'function "frobnicate" not defined'),
        ('{{ define "x" }}{{ end }}', "not supported"),
        ("{{ with .A }}a{{ else with .B }}b{{ end }}", "else with .B"),
    ],
)
def test_errors_name_the_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        parse(source)


def test_ollama_collates_system_and_same_role_neighbours() -> None:
    system, messages = collate(
        [{"role": "system", "content": "A"}, {"role": "system", "content": "B"},
         {"role": "user", "content": "x"}, {"role": "user", "content": "y"}]
    )  # fmt: skip
    assert system == "A\n\nB"
    assert [(m["Role"], m["Content"]) for m in messages] == [("system", "A\n\nB"),
                                                             ("user", "x\n\ny")]  # fmt: skip


def test_legacy_templates_run_per_exchange_and_stop_at_the_response() -> None:
    legacy = GoChatTemplate(
        "{{ if .System }}<<{{ .System }}>>{{ end }}[U]{{ .Prompt }}[A]{{ .Response }}[END]"
    )
    assert not legacy.uses_messages
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]
    assert legacy.render(conversation) == "<<S>>[U]hi[A]hello[END][U]bye[A]"


def test_messages_templates_run_once() -> None:
    template = GoChatTemplate(
        "{{ if .System }}S:{{ .System }}|{{ end }}"
        "{{ range .Messages }}{{ .Role }}:{{ .Content }}|{{ end }}"
    )
    assert template.uses_messages
    rendered = template.render([{"role": "system", "content": "be nice"},
                                {"role": "user", "content": "hi"}])  # fmt: skip
    assert rendered == "S:be nice|system:be nice|user:hi|"
