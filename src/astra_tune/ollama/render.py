"""A conversation through an Ollama TEMPLATE, the way Ollama's server builds the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from astra_tune.ollama.gotemplate import execute, field_names, parse


class GoChatTemplate:
    """A parsed Ollama TEMPLATE, in either of Ollama's two forms.

    `.Messages` templates run once over the whole conversation. Older templates use
    `.System`/`.Prompt`/`.Response` and run once per exchange; the last run stops at
    `.Response`, so the prompt ends where the answer begins (Ollama's template.Execute).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = parse(source)
        self.uses_messages = "Messages" in field_names(self.nodes)

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        system, collated = collate(messages)
        if self.uses_messages:
            data = {"System": system, "Messages": collated, "Tools": None, "Response": ""}
            return execute(self.nodes, data)
        return self._legacy(collated)

    def _legacy(self, messages: list[dict[str, Any]]) -> str:
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(execute(self.nodes, dict(turn)))
            turn.update(System="", Prompt="", Response="")

        for message in messages:
            role, content = message["Role"], message["Content"]
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
        out.append(execute(self.nodes, dict(turn), stop_at_response=True))
        return "".join(out)


def collate(messages: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Ollama's view of a conversation: system texts joined, same-role neighbours merged."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role", "user"))
        content = str(message.get("content") or "")
        if role == "system":
            system.append(content)
        if collated and collated[-1]["Role"] == role and role != "tool":
            collated[-1]["Content"] += "\n\n" + content
        else:
            collated.append({"Role": role, "Content": content, "Images": None, "ToolCalls": None})
    return "\n\n".join(system), collated
