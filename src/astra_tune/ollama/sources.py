"""Where a Jinja chat template lives: tokenizer_config.json, a .jinja file, a GGUF, a model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astra_tune.errors import ModelError


@dataclass(frozen=True)
class ChatTemplateSource:
    """A Jinja chat template with the special tokens it refers to."""

    template: str
    bos_token: str
    eos_token: str
    origin: str  # the file it was read from


def find_chat_template(path: Path) -> ChatTemplateSource:
    """The chat template in `path`: tokenizer_config.json, *.jinja, *.gguf or a model dir."""
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory", where=str(path))
    if path.is_dir():
        config = path / "tokenizer_config.json"
        jinja = path / "chat_template.jinja"  # transformers >= 4.43 saves it on its own
        if jinja.is_file():
            tokens = _tokens(config) if config.is_file() else ("", "")
            return ChatTemplateSource(jinja.read_text(encoding="utf-8"), *tokens, str(jinja))
        if config.is_file():
            return find_chat_template(config)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return find_chat_template(ggufs[0])
        raise ModelError(
            f"{path} holds no tokenizer_config.json, chat_template.jinja or .gguf file",
            where=str(path),
        )
    if path.suffix.lower() == ".gguf":
        from astra_tune.models.gguf_meta import gguf_facts

        facts = gguf_facts(path)
        if not facts["chat_template"]:
            raise ModelError(f"{path.name} has no tokenizer.chat_template", where=str(path))
        return ChatTemplateSource(
            facts["chat_template"], facts["bos_token"], facts["eos_token"], str(path)
        )
    if path.suffix.lower() == ".json":
        settings = _read(path)
        template = settings.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        beside = path.parent / "chat_template.jinja"
        if (not isinstance(template, str) or not template) and beside.is_file():
            # transformers 5 saves the template beside the config instead of inside it.
            return ChatTemplateSource(
                beside.read_text(encoding="utf-8"), *_tokens(path), str(beside)
            )
        if not isinstance(template, str) or not template:
            raise ModelError(
                f"{path.name} has no chat_template",
                where=f"{path}: chat_template",
                fix="use an instruct model's tokenizer_config.json, or a .jinja file",
            )
        return ChatTemplateSource(template, *_tokens(path), str(path))
    text = path.read_text(encoding="utf-8")
    config = path.parent / "tokenizer_config.json"
    tokens = _tokens(config) if config.is_file() else ("", "")
    return ChatTemplateSource(text, *tokens, str(path))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path.name} is not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} is not a JSON object", where=str(path))
    return data


def _tokens(config: Path) -> tuple[str, str]:
    settings = _read(config)

    def text(value: Any) -> str:
        # Older configs store special tokens as {"content": "<s>", "lstrip": false, ...}.
        if isinstance(value, dict):
            value = value.get("content")
        return value if isinstance(value, str) else ""

    return text(settings.get("bos_token")), text(settings.get("eos_token"))
