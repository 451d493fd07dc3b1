from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from astra_tune.cli.data import highlight_trained
from astra_tune.data.inspect import inspect_data
from astra_tune.errors import DataError
from tests.data.helpers import FIXTURES, run_prepare


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "prepared"
    run_prepare(
        out,
        tiny_model_dir,
        [
            str(FIXTURES / "openai.jsonl"),
            str(FIXTURES / "text.jsonl"),
            str(FIXTURES / "preference.jsonl"),
        ],
    )
    return out


def test_summary_counts_every_split(prepared: Path, smollm2_tokenizer: Any) -> None:
    result = inspect_data(prepared, tokenizer=smollm2_tokenizer, base_model="tiny", examples=7)
    [train, val, test] = result.splits
    assert (train.name, train.records, val.records, test.records) == ("train", 7, 0, 0)
    assert train.kinds == {"chat": 3, "text": 2, "preference": 2}
    assert (
        train.token_percentiles["p5"]
        <= train.token_percentiles["p50"]
        <= train.token_percentiles["max"]
    )
    assert len(result.examples) == 7


def test_examples_show_exactly_the_trained_tokens(prepared: Path, smollm2_tokenizer: Any) -> None:
    result = inspect_data(prepared, tokenizer=smollm2_tokenizer, base_model="tiny", examples=7)
    for record, rendered in result.examples:
        trained = smollm2_tokenizer.decode(
            [i for i, t in zip(rendered.input_ids, rendered.trained, strict=True) if t]
        )
        if "messages" in record:
            assert trained == record["messages"][-1]["content"] + "<|im_end|>"
        elif "chosen" in record:
            assert trained == record["chosen"] + "<|im_end|>"
        else:
            assert trained == record["text"]
        text = highlight_trained(rendered)
        assert text.plain == rendered.text
        green = "".join(text.plain[s.start : s.end] for s in text.spans if s.style == "bold green")
        assert green.replace("<|im_end|>", "") in rendered.text


def test_a_single_file_can_be_inspected(prepared: Path, smollm2_tokenizer: Any) -> None:
    result = inspect_data(
        prepared / "train.jsonl", tokenizer=smollm2_tokenizer, base_model="tiny", examples=1
    )
    assert [s.records for s in result.splits] == [7]


def test_raw_files_are_refused(tmp_path: Path, smollm2_tokenizer: Any) -> None:
    with pytest.raises(DataError) as info:
        inspect_data(FIXTURES / "alpaca.jsonl", tokenizer=smollm2_tokenizer, base_model="tiny")
    assert info.value.where == f"{FIXTURES / 'alpaca.jsonl'}:1"
    assert "astra data prepare" in (info.value.fix or "")
    raw = tmp_path / "broken.jsonl"
    raw.write_text(json.dumps({"text": "ok"}) + "\n{nope\n")
    with pytest.raises(DataError, match="malformed JSON"):
        inspect_data(raw, tokenizer=smollm2_tokenizer, base_model="tiny")
