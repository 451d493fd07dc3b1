from __future__ import annotations

import json
from pathlib import Path

from astra_tune.data import filters
from tests.data.helpers import run_prepare

FRENCH = (
    "La tour Eiffel a été construite pour l'Exposition universelle de 1889 à Paris, "
    "et elle reste aujourd'hui le monument le plus visité de la ville."
)


def chat(question: str, answer: str | None) -> dict:
    messages = [{"role": "user", "content": question}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return {"messages": messages}


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_defaults_drop_only_broken_and_garbage(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = write(
        tmp_path / "mixed.jsonl",
        [
            chat("Translate 'good morning' into French.", "Bonjour."),  # short but valid
            chat("What is 6 x 7?", "42"),  # no letters, but short: kept
            chat("Say something", ""),  # empty answer
            chat("Anyone there?", None),  # no answer at all
            chat("Describe the sea", "!" * 150),  # one character repeated
            chat("List symbols", "@#$%^&*() " * 8),  # almost no letters
            chat("Tell me about the Eiffel Tower in French.", FRENCH),  # not English, but kept
        ],
    )
    splits, report = run_prepare(
        tmp_path / "out", tiny_model_dir, [str(source)], dedup={"near": False}
    )
    kept = [r["messages"][1]["content"] for r in splits["train"]]
    assert kept == ["Bonjour.", "42", FRENCH]
    assert report["drops"] == {
        filters.EMPTY_TURN: 1,
        filters.NO_ANSWER: 1,
        filters.CHAR_RUN: 1,
        filters.LOW_ALPHA: 1,
    }
    assert report["drop_examples"][filters.EMPTY_TURN] == [f"{source}:3"]


def test_opt_in_thresholds(tmp_path: Path, tiny_model_dir: Path) -> None:
    long_english = (
        "The Eiffel Tower was built for the 1889 World's Fair and is still the most visited "
        "monument in Paris, with millions of people climbing its stairs every single year."
    )
    assert len(FRENCH) < 160 < len(long_english)
    source = write(
        tmp_path / "langs.jsonl",
        [
            chat("In French please.", FRENCH),
            chat("In English please.", long_english),
            chat("Short French?", "Oui, bien sûr."),  # too short to judge: kept
            chat("One word", "Yes."),
        ],
    )
    splits, report = run_prepare(
        tmp_path / "out",
        tiny_model_dir,
        [str(source)],
        filters={"languages": ["en"], "min_response_tokens": 3, "max_response_chars": 160},
    )
    kept = [r["messages"][1]["content"] for r in splits["train"]]
    assert kept == ["Oui, bien sûr."]
    assert report["drops"] == {
        filters.LANGUAGE: 1,
        filters.TOO_LONG_CHARS: 1,
        filters.TOO_SHORT_TOKENS: 1,
    }
