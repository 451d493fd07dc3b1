"""Our fast GGUF metadata reader agrees with gguf-py's reader on every key."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from astra_tune.errors import ModelError
from astra_tune.export.convert import write_gguf
from astra_tune.models.gguf_meta import read_metadata


def test_metadata_matches_gguf_py(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    path = write_gguf(
        tiny_model_dir,
        tmp_path / "m.gguf",
        "q8_0",
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
        metadata={"name": "tiny", "license": "mit"},
    ).path
    ours = read_metadata(path)
    reader = gguf.GGUFReader(path)
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        if isinstance(expected, float):
            assert ours[key] == pytest.approx(expected), key
        else:
            assert ours[key] == expected, key
    assert ours["__tensor_count__"] == len(reader.tensors)
    assert ours["__parameters__"] == sum(int(t.n_elements) for t in reader.tensors)


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"nope" * 10)
    with pytest.raises(ModelError, match="not a GGUF"):
        read_metadata(path)


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (lambda size: 1000, "is cut short or damaged: its header cannot be read"),
        (lambda size: size // 2, "is cut short: its tensors need"),
        (lambda size: size - 1, "is cut short: its tensors need"),
    ],
)
def test_a_file_cut_short_is_a_clear_error(
    tmp_path: Path, tiny_gguf_file: Path, keep: object, message: str
) -> None:
    data = tiny_gguf_file.read_bytes()
    assert read_metadata(tiny_gguf_file)["__tensor_count__"] > 0  # whole: reads fine
    assert callable(keep)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: keep(len(data))])
    with pytest.raises(ModelError, match=message) as caught:
        read_metadata(cut)
    assert caught.value.where == str(cut)


def test_import_refuses_a_cut_file_without_registering_it(
    tmp_path: Path, tiny_gguf_file: Path
) -> None:
    from tests.cli_runner import run_astra

    data = tiny_gguf_file.read_bytes()
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    for keep in (1 << 10, len(data) // 2):
        cut = tmp_path / f"cut-{keep}.gguf"
        cut.write_bytes(data[:keep])
        result = run_astra("import", str(cut), "--name", "cut", env=env)
        assert result.exit_code == 2
        assert "is cut short" in result.stderr
        assert "Traceback" not in result.stderr
    assert "registry is empty" in run_astra("registry", "list", env=env).stdout
