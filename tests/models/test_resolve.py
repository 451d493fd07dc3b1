from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.errors import ModelError
from astra_tune.models.catalog import CATALOG, DEFAULT_MODEL, bundled_gguf_path, catalog_entry
from astra_tune.models.resolve import load_tokenizer, parse_spec, resolve_model
from tests.cli_runner import run_astra


def test_catalog_names_are_unique_and_have_a_hub_id() -> None:
    names = [entry.name for entry in CATALOG]
    assert len(names) == len(set(names))
    assert all("/" in entry.hub_id for entry in CATALOG)
    assert catalog_entry(DEFAULT_MODEL) is not None


def test_bundled_gguf_is_installed() -> None:
    entry = catalog_entry(DEFAULT_MODEL)
    assert entry is not None
    path = bundled_gguf_path(entry)
    assert path.suffix == ".gguf"
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("smollm2-135m-instruct", "catalog"),
        ("SmolLM2-135M-Instruct", "catalog"),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", "hub"),
        ("org/model.v2", "hub"),
    ],
)
def test_parse_named_specs(spec: str, kind: str) -> None:
    assert parse_spec(spec).kind == kind


def test_parse_local_directory_and_gguf(tiny_model_dir: Path) -> None:
    assert parse_spec(str(tiny_model_dir)).kind == "hf_dir"
    entry = catalog_entry(DEFAULT_MODEL)
    assert entry is not None
    gguf = parse_spec(str(bundled_gguf_path(entry)))
    assert gguf.kind == "gguf"
    assert gguf.path == bundled_gguf_path(entry)


def test_local_directory_resolves_to_itself(tiny_model_dir: Path) -> None:
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.kind == "hf_dir"
    assert resolved.path == tiny_model_dir.resolve()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.gguf", "model file not found"),
        (lambda d: d / "empty_dir", "without config.json"),
        (lambda d: d / "notes.txt", "not a .gguf model"),
    ],
)
def test_bad_local_specs(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelError, match=message):
        parse_spec(str(make(tmp_path)))


def test_unknown_name_suggests_the_closest_catalog_entry() -> None:
    with pytest.raises(ModelError) as info:
        parse_spec("smolm2-135m-instruct")
    assert info.value.fix is not None
    assert "did you mean 'smollm2-135m-instruct'?" in info.value.fix


def test_hub_model_offline_names_hf_hub_offline_and_alternatives() -> None:
    # conftest sets HF_HUB_OFFLINE=1 and this repo is in no cache.
    with pytest.raises(ModelError) as info:
        resolve_model("astra-tune-tests/not-a-real-model")
    assert "HF_HUB_OFFLINE" in info.value.what
    assert info.value.fix is not None
    assert "smollm2-135m-instruct" in info.value.fix
    assert "HF_HUB_OFFLINE" in info.value.fix


def test_cli_hub_model_offline_is_one_clear_error() -> None:
    result = run_astra("chat", "astra-tune-tests/not-a-real-model", "-p", "hi")
    assert result.exit_code == 2
    assert "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_the_tokenizer_of_a_gguf_model_needs_no_dequantized_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    monkeypatch.setenv("ASTRA_HOME", str(tmp_path / "fresh"))
    tokenizer = load_tokenizer(DEFAULT_MODEL)
    assert not (tmp_path / "fresh" / "models").exists()  # nothing was dequantized for it
    prepared = AutoTokenizer.from_pretrained(default_model_dir)
    text = "Hello, wörld! 123 <|im_end|> def f(x):\n    return x"
    assert tokenizer(text)["input_ids"] == prepared(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        prepared.apply_chat_template(messages, tokenize=False)
    )
