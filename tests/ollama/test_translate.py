"""Jinja chat templates -> Ollama TEMPLATEs, proven by rendering both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.ollama.render import GoChatTemplate
from astra_tune.ollama.translate import JinjaChat, TranslationError, translate
from tests.cli_runner import run_astra
from tests.ollama.template_zoo import ZOO

EXPECTED = {  # family: (system placement, stop parameters)
    "chatml": ("block", ["<|im_end|>", "<|im_start|>"]),
    "chatml_default_system": ("block", ["<|im_end|>", "<|im_start|>"]),
    "llama3": ("block", ["<|eot_id|>", "<|start_header_id|>"]),
    "llama2": ("first-user", ["</s>", "[INST]"]),
    "mistral": ("last-user", ["</s>", "[INST]"]),
    "gemma": ("none", ["<end_of_turn>", "<start_of_turn>"]),
    "phi3": ("block", ["<|end|>", "<|endoftext|>", "<|user|>"]),
    "zephyr": ("block", ["</s>", "<|user|>"]),
    "alpaca": ("block", ["</s>", "### Instruction:"]),
    "mistral_v1": ("none", ["</s>", "[INST]"]),
}


@pytest.mark.parametrize("family", sorted(ZOO))
def test_every_family_translates_and_renders_identically(family: str) -> None:
    zoo = ZOO[family]
    translation = translate(zoo.jinja, bos_token=zoo.bos_token, eos_token=zoo.eos_token)
    assert (translation.style, translation.stops) == EXPECTED[family]
    names = {check.name for check in translation.checks}
    assert {"user only", "multi-turn", "assistant prefill"} <= names
    if zoo.supports_system:
        assert {"system + user", "system + multi-turn", "empty system"} <= names
    for check in translation.checks:
        assert check.jinja == check.go, (family, check.name)
    assert bool(translation.notes) == (zoo.trims_content or not zoo.supports_system) or (
        family == "mistral"  # trims only assistant text, which the user probe does not see
    )

    # A conversation outside the probe set renders the same through both templates too.
    chat = JinjaChat(zoo.jinja, zoo.bos_token, zoo.eos_token)
    go = GoChatTemplate(translation.template)
    conversation = [
        {"role": "user", "content": "Wie spät ist es?"},
        {"role": "assistant", "content": "Es ist 12 Uhr.\n\nNoch etwas?"},
        {"role": "user", "content": "Nein, danke — tschüss 👋"},
    ]
    if zoo.supports_system:
        conversation.insert(0, {"role": "system", "content": "Antworte auf Deutsch."})
    assert go.render(conversation) == chat.prompt(conversation)


def test_rendering_is_the_familys_real_format() -> None:
    """Anchors the proof: the Go template's output is the literal ChatML/Llama-3 prompt."""
    chatml = translate(ZOO["chatml"].jinja).template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert GoChatTemplate(chatml).render(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    llama3 = ZOO["llama3"]
    template = translate(llama3.jinja, bos_token=llama3.bos_token).template
    # The leading <|begin_of_text|> is llama.cpp's to add, as in Ollama's own templates.
    assert GoChatTemplate(template).render(messages[1:]) == (
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_a_bos_that_is_template_text_stays() -> None:
    """SmolLM2 declares <|im_start|> as BOS, but its template writes it as text."""
    zoo = ZOO["chatml_default_system"]
    translation = translate(zoo.jinja, bos_token="<|im_start|>", eos_token=zoo.eos_token)
    rendered = GoChatTemplate(translation.template).render([{"role": "user", "content": "x"}])
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert translation.default_system is not None


@pytest.mark.parametrize(
    ("jinja", "reason"),
    [
        ("{% for m in messages %}{{ m.content }}|{{ m.content }}{% endfor %}", "appears 2 times"),
        (
            "{% for m in messages %}<{{ m.role }}{{ loop.index }}>{{ m.content }}{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}",
            "renders",
        ),
        (
            "{% for m in messages|reverse %}[{{ m.role }}]{{ m.content }}{% endfor %}",
            "after the first user message",
        ),
    ],
)
def test_untranslatable_templates_are_refused_with_the_reason(jinja: str, reason: str) -> None:
    with pytest.raises(TranslationError, match=reason) as caught:
        translate(jinja)
    assert "--template-file" in str(caught.value.fix)


def test_cli_prints_the_template_for_each_kind_of_file(
    tmp_path: Path, tiny_gguf_file: Path
) -> None:
    zoo = ZOO["llama3"]
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": zoo.jinja, "bos_token": zoo.bos_token,
                                  "eos_token": {"content": zoo.eos_token}}))  # fmt: skip
    printed = run_astra("modelfile", "template", str(config))
    assert printed.exit_code == 0, printed.stderr
    assert printed.stdout.startswith('TEMPLATE """{{- range $i, $_ := .Messages }}')
    assert printed.stdout.endswith(
        'PARAMETER stop "<|eot_id|>"\nPARAMETER stop "<|start_header_id|>"\n'
    )
    assert "8/8 probe conversations render identically" in printed.stderr

    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text(ZOO["zephyr"].jinja)
    assert 'PARAMETER stop "<|user|>"' in run_astra("modelfile", "template", str(jinja)).stdout
    from_gguf = run_astra("modelfile", "template", str(tiny_gguf_file))
    assert "You are a helpful AI assistant named SmolLM" in from_gguf.stdout

    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }}{{ m.content }}{% endfor %}")
    refused = run_astra("modelfile", "template", str(bad))
    assert refused.exit_code == 2
    assert "--template-file" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_config_without_template_uses_the_jinja_file_beside_it(tmp_path: Path) -> None:
    # transformers 5 layout: tokenizer_config.json keeps the tokens, the template is apart.
    zoo = ZOO["llama3"]
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": zoo.bos_token, "eos_token": zoo.eos_token}))
    (tmp_path / "chat_template.jinja").write_text(zoo.jinja)
    printed = run_astra("modelfile", "template", str(config))
    assert printed.exit_code == 0, printed.stderr
    assert 'PARAMETER stop "<|eot_id|>"' in printed.stdout
    assert "chat_template.jinja" in printed.stderr  # says where it was read from
