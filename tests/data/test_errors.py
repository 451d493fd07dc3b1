"""Every bad input gets one clear error: what, where (file:line), how to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.data.prepare import prepare_data
from astra_tune.errors import DataError
from tests.data.helpers import FIXTURES, data_config, run_prepare


def fail(tmp_path: Path, model: Path, sources: list, **overrides) -> DataError:
    with pytest.raises(DataError) as info:
        prepare_data(
            data_config(sources, **overrides), tmp_path / "out", base_model=str(model), seed=0
        )
    return info.value


GOOD = json.dumps({"instruction": "Hi?", "output": "Hello."})


def test_malformed_json_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(GOOD + "\n" + '{"instruction": "Hi?", "output": }\n')
    error = fail(tmp_path, tiny_model_dir, [str(source)])
    assert error.where == f"{source}:2"
    assert error.what == "malformed JSON: Expecting value (column 34)"
    assert "--skip-bad-lines" in (error.fix or "")


def test_skip_bad_lines_counts_them(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text(GOOD + "\n{oops\n[1, 2]\n")
    splits, report = run_prepare(
        tmp_path / "out", tiny_model_dir, [str(source)], skip_bad_lines=True
    )
    assert len(splits["train"]) == 1
    assert report["bad_lines"] == 2
    assert report["bad_line_examples"][0].startswith(f"{source}:2: malformed JSON")
    assert (
        report["bad_line_examples"][1] == f"{source}:3: each line must be a JSON object, not list"
    )


def test_unknown_shape_names_file_line_fields_and_formats(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    source = tmp_path / "odd.jsonl"
    source.write_text(json.dumps({"question": "Hi?", "reply": "Hello."}) + "\n")
    error = fail(tmp_path, tiny_model_dir, [str(source)])
    assert error.where == f"{source}:1"
    assert error.what == "unknown record shape; fields seen: question, reply"
    assert "alpaca (instruction / input / output)" in (error.fix or "")
    # One hint with every mapping needed: `question` is already a known column name.
    assert "Rename the columns: --map answer=reply (in a recipe" in (error.fix or "")


@pytest.mark.parametrize(
    ("row", "hint"),
    [
        ({"id": 1, "q": "Hi?", "a": "Hello."}, "--map prompt=q --map completion=a"),
        (
            {"user_msg": "Hi?", "bot_reply": "Hello."},
            "--map prompt=user_msg --map completion=bot_reply",
        ),
        (
            {"ticket": "Hi?", "resolution": "Hello."},
            "--map prompt=ticket --map completion=resolution",
        ),
    ],
)
def test_the_mapping_hint_names_every_column_needed(
    tmp_path: Path, tiny_model_dir: Path, row: dict, hint: str
) -> None:
    source = tmp_path / "odd.jsonl"
    source.write_text(json.dumps(row) + "\n")
    error = fail(tmp_path, tiny_model_dir, [str(source)])
    assert f"Rename the columns: {hint} (in a recipe: data.mapping)" in (error.fix or "")
    # ... and following it works.
    mapping = dict(item.split("=") for item in hint.removeprefix("--map ").split(" --map "))
    splits, _ = run_prepare(tmp_path / "ok", tiny_model_dir, [str(source)], mapping=mapping)
    assert splits["train"][0]["messages"][-2:] == [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_a_forced_format_names_the_columns_it_needs(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "qa.jsonl"
    source.write_text(json.dumps({"ask": "Hi?", "reply": "Hello."}) + "\n")
    error = fail(tmp_path, tiny_model_dir, [str(source)], format="alpaca")
    assert "Rename columns: --map instruction=ask --map output=reply" in (error.fix or "")


def test_mixed_shapes(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "mixed.jsonl"
    source.write_text(GOOD + "\n" + json.dumps({"prompt": "Hi?", "completion": "Hello."}) + "\n")
    error = fail(tmp_path, tiny_model_dir, [str(source)])
    assert error.where == f"{source}:2"
    assert error.what == (
        f"mixed shapes: this row looks like prompt_completion, but the file's first row "
        f"({source}:1) is alpaca"
    )
    assert "fields seen: completion, prompt" in (error.fix or "")


def test_a_forced_format_that_does_not_fit_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "chats.jsonl"
    source.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yo"},
                ]
            }
        )
        + "\n"
    )
    error = fail(tmp_path, tiny_model_dir, [str(source)], format="alpaca")
    assert error.where == f"{source}:1"
    assert error.what == "this row is not alpaca, the format asked for: it looks like openai"
    assert "mixed" not in error.what
    assert "--format openai" in (error.fix or "")


def test_bad_values_name_the_field(tmp_path: Path, tiny_model_dir: Path) -> None:
    source = tmp_path / "share.jsonl"
    source.write_text(json.dumps({"conversations": [{"from": "robot", "value": "hi"}]}) + "\n")
    error = fail(tmp_path, tiny_model_dir, [str(source)])
    assert error.where == f"{source}:1"
    assert error.what.startswith("conversations[0].from is 'robot'; known: ")


def test_empty_result_names_the_filter(tmp_path: Path, tiny_model_dir: Path) -> None:
    error = fail(
        tmp_path,
        tiny_model_dir,
        [str(FIXTURES / "alpaca.jsonl")],
        filters={"min_response_chars": 500},
    )
    assert error.what == "no records left: 'answer shorter than min_response_chars' removed 3 of 3"


def test_hub_dataset_offline(tmp_path: Path, tiny_model_dir: Path) -> None:
    error = fail(tmp_path, tiny_model_dir, ["someone/some-dataset"])
    assert "HF_HUB_OFFLINE" in error.what
    assert error.where == "https://huggingface.co/datasets/someone/some-dataset"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.jsonl", "caf\xe9".encode("latin-1"), "is not UTF-8 or UTF-16 text"),
        ("two.json", json.dumps({"a": [], "b": []}).encode(), "must have exactly one list"),
        ("data.xml", b"<x/>", "unknown file type .xml"),
        ("empty.jsonl", b"\n\n", "the sources hold no records"),
    ],
)
def test_unreadable_files(
    tmp_path: Path, tiny_model_dir: Path, name: str, content: bytes, message: str
) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    assert message in fail(tmp_path, tiny_model_dir, [str(source)]).what


def test_missing_source(tmp_path: Path, tiny_model_dir: Path) -> None:
    error = fail(tmp_path, tiny_model_dir, [str(tmp_path / "nope.jsonl")])
    assert error.what == f"file not found: {tmp_path / 'nope.jsonl'}"


@pytest.mark.parametrize("spec", ["data/nope.jsonl", "notes/missing.md"])
def test_missing_relative_file_is_not_sent_to_the_hub(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    # Shaped like org/name, but a file name with a suffix we read (or under an existing
    # directory) is a mistyped path: "file not found" at once, no hub round trips.
    (tmp_path / "notes").mkdir()
    monkeypatch.chdir(tmp_path)
    error = fail(tmp_path, tiny_model_dir, [spec])
    assert error.what == f"file not found: {spec}"
    assert error.where == str(tmp_path / spec)


def test_unknown_builtin(tmp_path: Path, tiny_model_dir: Path) -> None:
    error = fail(tmp_path, tiny_model_dir, ["builtin:nope"])
    assert "builtin:orrery" in (error.fix or "")


def test_failed_run_leaves_previous_output_intact(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    run_prepare(out, tiny_model_dir, [str(FIXTURES / "alpaca.jsonl")])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fail(
        tmp_path,
        tiny_model_dir,
        [str(FIXTURES / "alpaca.jsonl")],
        filters={"min_response_chars": 500},
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging leftovers


def test_refuses_to_replace_a_foreign_directory(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    error = fail(tmp_path, tiny_model_dir, [str(FIXTURES / "alpaca.jsonl")])
    assert "is not a prepared-data directory" in error.what
    assert (out / "precious.txt").read_text() == "keep me"
