"""Text cleaning that keeps meaning intact.

Unicode NFC, control characters out, line endings and odd spaces normalized, trailing
spaces trimmed. Newlines, indentation and code blocks are never touched: collapsing or
stripping them (as naive cleaners do) destroys code and lists.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from astra_tune.recipe import CleanConfig

# C0/C1 controls except tab and newline, plus zero-width space and stray BOMs. Zero-width
# joiners stay: emoji sequences need them.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_ODD_SPACES = re.compile("[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+$", re.MULTILINE)
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")
_URL = re.compile(r"https?://[^\s<>()\"'`\]]+")


class Cleaner:
    """Cleans every string of a record according to a CleanConfig."""

    def __init__(self, config: CleanConfig) -> None:
        self.config = config

    def text(self, value: str) -> str:
        """One cleaned string."""
        config = self.config
        if config.unicode_nfc and not value.isascii():
            value = unicodedata.normalize("NFC", value)
        if "\r" in value:
            value = value.replace("\r\n", "\n").replace("\r", "\n")
        if config.strip_control_chars:
            value = _CONTROL.sub("", value)
        if config.strip_urls:
            value = _URL.sub("", value)
        if config.normalize_whitespace:
            if not value.isascii():
                value = _ODD_SPACES.sub(" ", value)
            # The guards skip regex passes that would change nothing (most strings).
            if " \n" in value or "\t\n" in value:
                value = _TRAILING.sub("", value)
            if value[:1].isspace():
                value = _LEADING_BLANK_LINES.sub("", value)
            value = value.rstrip()
        return value

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record with every text field cleaned (in place, and returned)."""
        if "messages" in record:
            for message in record["messages"]:
                message["content"] = self.text(message["content"])
        elif "chosen" in record:
            for message in record["prompt"]:
                message["content"] = self.text(message["content"])
            record["chosen"] = self.text(record["chosen"])
            record["rejected"] = self.text(record["rejected"])
        else:
            record["text"] = self.text(record["text"])
        return record
