from __future__ import annotations

import pytest

from astra_tune.data.clean import Cleaner
from astra_tune.recipe import CleanConfig

CLEAN = Cleaner(CleanConfig())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Cafe\u0301", "Café"),  # NFC
        ("a\x00b\x07c\u200bd\ufeff", "abcd"),  # control and zero-width characters
        ("line one\r\nline two\rline three", "line one\nline two\nline three"),
        ("non\u00a0breaking\u3000space", "non breaking space"),
        ("trailing   \nspaces\t\n", "trailing\nspaces"),
        ("\n\n  indented first line", "  indented first line"),
        (
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
            "family \U0001f468\u200d\U0001f469\u200d\U0001f467",
        ),
        ("Bonjour.", "Bonjour."),
    ],
)
def test_cleaning_normalizes_without_changing_meaning(raw: str, expected: str) -> None:
    assert CLEAN.text(raw) == expected


def test_code_blocks_and_indentation_survive() -> None:
    code = (
        "Here is the function:\n\n```python\ndef f(x):\n    if x:\n\t\treturn [1,  2]\n\n"
        "    return None  # two  spaces stay\n```\n\n- item one\n  - nested item"
    )
    assert CLEAN.text(code) == code


def test_urls_are_stripped_only_when_asked() -> None:
    text = "See https://example.com/docs?x=1 for details."
    assert CLEAN.text(text) == text
    assert Cleaner(CleanConfig(strip_urls=True)).text(text) == "See  for details."


def test_record_cleaning_reaches_every_field() -> None:
    record = {
        "prompt": [{"role": "user", "content": "q\x00"}],
        "chosen": "a \n",
        "rejected": "b\r\n",
    }
    assert CLEAN.record(record) == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": "a",
        "rejected": "b",
    }
