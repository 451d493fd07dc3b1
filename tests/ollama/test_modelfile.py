"""Modelfiles read with Ollama's rules, written so Ollama reads them back the same."""

from __future__ import annotations

import pytest

from astra_tune.ollama.modelfile import Modelfile, ModelfileError, parameter_pairs, parse

TRIPLE = '"""'

GUIDE_STYLE = f"""# a comment line
from ./llama-3.2-1b.Q4_K_M.gguf
Template {TRIPLE}{{{{ if .System }}}}<|system|>
{{{{ .System }}}}{{{{ end }}}}<|user|>
{{{{ .Prompt }}}}<|assistant|>
{TRIPLE}
PARAMETER temperature 0.7
parameter stop "<|user|>"
PARAMETER   stop   <|system|>
PARAMETER num_ctx 4096
PARAMETER use_mmap false
SYSTEM You are Mario from Super Mario Bros.
license {TRIPLE}MIT
Copyright (c) someone{TRIPLE}
MESSAGE user Is it a me?
"""


def test_parses_with_ollamas_rules() -> None:
    modelfile = parse(GUIDE_STYLE)
    assert modelfile.from_ == "./llama-3.2-1b.Q4_K_M.gguf"
    assert modelfile.template == (
        "{{ if .System }}<|system|>\n{{ .System }}{{ end }}<|user|>\n{{ .Prompt }}<|assistant|>\n"
    )
    assert modelfile.parameters == {
        "temperature": 0.7,
        "stop": ["<|user|>", "<|system|>"],
        "num_ctx": 4096,
        "use_mmap": False,
    }
    assert modelfile.system == "You are Mario from Super Mario Bros."
    assert modelfile.license == ["MIT\nCopyright (c) someone"]
    assert modelfile.messages == [{"role": "user", "content": "Is it a me?"}]


def test_written_modelfiles_read_back_the_same() -> None:
    original = Modelfile(
        from_="./m.gguf",
        adapters=["./a.gguf"],
        template='{{ range .Messages }}{{ .Content }}\n"quoted"{{ end }}',
        system="Line one.\n  Line two.",
        parameters={"temperature": 0.2, "stop": ["<|im_end|>", "\n\n"], "seed": 42},
        license=["Apache-2.0"],
    )
    assert parse(original.text("a header\nover two lines")) == original


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("FROM m.gguf\nPARAMETER temprature 0.7", "unknown parameter 'temprature'", "Modelfile:2"),
        ("FROM m.gguf\n\nPARAMETER top_k lots", "top_k must be an integer", "Modelfile:3"),
        ("FROM m.gguf\nPARAMETER use_mmap maybe", "must be true or false", "Modelfile:2"),
        ("FROM m.gguf\nFROBNICATE x", "unknown command 'FROBNICATE'", "Modelfile:2"),
        ('FROM m.gguf\nSYSTEM """never closed\nstill open', "never closed", "Modelfile:2"),
        ("FROM m.gguf\nMESSAGE wizard hello", "invalid message role 'wizard'", "Modelfile:2"),
        ("SYSTEM hi", "no FROM line", "Modelfile"),
        ("FROM a.gguf\nFROM b.gguf", "more than one FROM", "Modelfile:2"),
    ],
)
def test_errors_give_the_line(text: str, message: str, line: str) -> None:
    with pytest.raises(ModelfileError, match=message) as caught:
        parse(text)
    assert caught.value.where == line


def test_cli_parameters_are_validated_like_modelfile_ones() -> None:
    assert parameter_pairs(["temperature=0.1", "stop=<|a|>", "stop=<|b|>", "num_predict=64"]) == {
        "temperature": 0.1,
        "stop": ["<|a|>", "<|b|>"],
        "num_predict": 64,
    }
    with pytest.raises(ModelfileError, match="not NAME=VALUE"):
        parameter_pairs(["temperature"])
    with pytest.raises(ModelfileError, match="temperature must be a number"):
        parameter_pairs(["temperature=hot"])


def test_values_are_written_and_read_as_ollama_does() -> None:
    """Ollama strips quotes and unescapes nothing; it prints multi-line values in "…"."""
    stop = "<\uff5cend\u2581of\u2581sentence\uff5c>"  # DeepSeek's end of sentence
    text = Modelfile(from_="m.gguf", parameters={"stop": [stop, "\n\n"]}).text()
    assert f'PARAMETER stop "{stop}"' in text  # verbatim, not \\uff5c
    assert parse(text).parameters["stop"] == [stop, "\n\n"]
    shown = 'FROM m.gguf\nSYSTEM "You answer in French.\nAlways."\nPARAMETER top_k 20\n'
    parsed = parse(shown)
    assert parsed.system == "You answer in French.\nAlways."
    assert parsed.parameters == {"top_k": 20}
    with pytest.raises(ModelfileError, match="never closed"):
        parse('FROM m.gguf\nSYSTEM "open\nstill open')
