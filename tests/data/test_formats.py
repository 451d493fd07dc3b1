"""Every supported format and file type normalizes to the same canonical records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.helpers import FIXTURES, messages_of, run_prepare

CANONICAL = [
    [
        {"role": "user", "content": "What is the boiling point of water at sea level?"},
        {"role": "assistant", "content": "Water boils at 100 °C (212 °F) at sea level."},
    ],
    [
        {"role": "user", "content": "Translate 'good morning' into French."},
        {"role": "assistant", "content": "Bonjour."},
    ],
    [
        {
            "role": "user",
            "content": "Write a Python function that adds two numbers.\n\nUse type hints.",
        },
        {
            "role": "assistant",
            "content": "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```",
        },
    ],
]


@pytest.mark.parametrize(
    ("name", "fmt", "first_line"),
    [
        ("alpaca.jsonl", "alpaca", 1),
        ("alpaca.json", "alpaca", 2),
        ("dolly.jsonl", "dolly", 1),
        ("sharegpt.json", "sharegpt", 4),
        ("openai.jsonl", "openai", 1),
        ("openai_bom.jsonl", "openai", 1),
        ("openai_utf16.jsonl", "openai", 1),
        ("prompt_completion.csv", "prompt_completion", 2),
        ("prompt_response.tsv", "prompt_completion", 2),
    ],
)
def test_chat_formats_normalize_to_the_same_records(
    tmp_path: Path, tiny_model_dir: Path, name: str, fmt: str, first_line: int
) -> None:
    splits, report = run_prepare(tmp_path / "out", tiny_model_dir, [str(FIXTURES / name)])
    assert messages_of(splits["train"]) == CANONICAL
    assert report["sources"][0]["format"] == fmt
    assert splits["train"][0]["source"] == f"tests/data/fixtures/{name}:{first_line}"


def test_json_records_carry_their_line_numbers(tmp_path: Path, tiny_model_dir: Path) -> None:
    splits, _ = run_prepare(tmp_path / "out", tiny_model_dir, [str(FIXTURES / "sharegpt.json")])
    lines = (FIXTURES / "sharegpt.json").read_text().splitlines()
    for record in splits["train"]:
        line = int(record["source"].rsplit(":", 1)[1])
        assert lines[line - 1].strip().startswith("{")
        assert record["messages"][0]["content"].split("\n")[0][:20] in "\n".join(
            lines[line - 1 : line + 8]
        )


def test_dolly_keeps_its_category(tmp_path: Path, tiny_model_dir: Path) -> None:
    splits, _ = run_prepare(tmp_path / "out", tiny_model_dir, [str(FIXTURES / "dolly.jsonl")])
    assert [r["category"] for r in splits["train"]] == ["open_qa", "translation", "coding"]


def test_parquet_and_saved_datasets(tmp_path: Path, tiny_model_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in (FIXTURES / "openai.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    DatasetDict(
        {"train": Dataset.from_list(rows[:2]), "extra": Dataset.from_list(rows[2:])}
    ).save_to_disk(str(tmp_path / "saved_dict"))
    for source in ("chat.parquet", "saved", "saved_dict"):
        splits, _ = run_prepare(
            tmp_path / f"out-{source}", tiny_model_dir, [str(tmp_path / source)]
        )
        assert sorted(map(str, messages_of(splits["train"]))) == sorted(map(str, CANONICAL)), source


def test_text_and_preference_records(tmp_path: Path, tiny_model_dir: Path) -> None:
    splits, report = run_prepare(
        tmp_path / "out",
        tiny_model_dir,
        [str(FIXTURES / "text.jsonl"), str(FIXTURES / "preference.jsonl")],
    )
    train = splits["train"]
    assert [r["text"] for r in train if "text" in r][
        1
    ] == "The Orbit Two added automatic bin emptying."
    pairs = [r for r in train if "chosen" in r]
    assert pairs[0]["prompt"] == [{"role": "user", "content": CANONICAL[0][0]["content"]}]
    assert pairs[0]["chosen"] == CANONICAL[0][1]["content"]
    assert pairs[0]["rejected"] == "Water boils at 50 °C."
    # Message-list pairs: the prompt is the conversation before the final answer.
    assert pairs[1]["prompt"] == [CANONICAL[1][0]]
    assert (pairs[1]["chosen"], pairs[1]["rejected"]) == ("Bonjour.", "Buenos días.")
    assert report["kinds"] == {"text": 2, "preference": 2}


def test_column_mapping_and_forced_format(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "faq.jsonl"
    source.write_text(
        json.dumps({"question": "Is it waterproof?", "answer": "Only splash-proof."}) + "\n"
    )
    splits, _ = run_prepare(
        tmp_path / "out",
        tiny_model_dir,
        [str(source)],
        mapping={"instruction": "question", "output": "answer"},
    )
    assert messages_of(splits["train"]) == [
        [{"role": "user", "content": "Is it waterproof?"},
         {"role": "assistant", "content": "Only splash-proof."}]
    ]  # fmt: skip
    # --format prompt_completion with a mapping onto prompt/response
    splits, report = run_prepare(
        tmp_path / "out2",
        tiny_model_dir,
        [str(source)],
        format="prompt_completion",
        mapping={"prompt": "question", "response": "answer"},
    )
    assert report["sources"][0]["format"] == "prompt_completion"
    assert splits["train"][0]["messages"][1]["content"] == "Only splash-proof."


def test_system_prompt_is_added_only_where_missing(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "chat.jsonl"
    source.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."},
                ]
            }
        )
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "Hey"},
                    {"role": "assistant", "content": "Yo."},
                ]
            }
        )
        + "\n"
    )
    splits, _ = run_prepare(
        tmp_path / "out", tiny_model_dir, [str(source)], system_prompt="You help."
    )
    systems = [r["messages"][0] for r in splits["train"]]
    assert systems == [
        {"role": "system", "content": "You help."},
        {"role": "system", "content": "Be terse."},
    ]


def test_documents_become_faq_chats_and_text(tmp_path: Path, tiny_model_dir: Path) -> None:
    splits, _ = run_prepare(tmp_path / "out", tiny_model_dir, [str(FIXTURES / "docs")])
    chats = {
        r["messages"][0]["content"]: r["messages"][1]["content"]
        for r in splits["train"]
        if "messages" in r
    }
    assert chats["How do I empty the bin?"].startswith("Press the bin latch and lift the bin out.")
    assert "# this line starts with '#' inside code" in chats["How do I empty the bin?"]
    assert (
        chats["Can it climb stairs?"] == "No. It detects stair edges with cliff sensors and stops."
    )
    assert chats["What is the warranty on the Orbit Two?"] == "The Orbit Two has a 2-year warranty."
    assert chats["Does the Vex work on skylights?"] == "Yes, on glass angled up to 60 degrees."
    assert chats["Is the Vex noisy?"] == "It runs at 52 dB."
    assert len(chats) == 5
    texts = [r["text"] for r in splits["train"] if "text" in r]
    assert any("## Specifications" in t and "Weight: 3.1 kg" in t for t in texts)
    assert any("Our support team answers within a day." in t and "var x" not in t for t in texts)
    assert any("The Vex ships with two safety tethers." in t for t in texts)
    faq = next(
        r
        for r in splits["train"]
        if "messages" in r and r["messages"][0]["content"] == "Can it climb stairs?"
    )
    assert faq["source"] == "tests/data/fixtures/docs/faq.md:18"


@pytest.mark.parametrize("header", ["question,answer", "query,response", "input,output"])
def test_question_answer_columns_are_detected(
    tmp_path: Path, tiny_model_dir: Path, header: str
) -> None:
    source = tmp_path / "faq.csv"
    source.write_text(f"{header}\nIs it waterproof?,Only splash-proof.\n")
    splits, report = run_prepare(tmp_path / "out", tiny_model_dir, [str(source)])
    assert report["sources"][0]["format"] == "prompt_completion"
    assert messages_of(splits["train"]) == [
        [{"role": "user", "content": "Is it waterproof?"},
         {"role": "assistant", "content": "Only splash-proof."}]
    ]  # fmt: skip
