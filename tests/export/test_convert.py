"""HF -> GGUF conversion on tiny llama, mistral-style and qwen2 models, checked in llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from astra_tune.errors import ModelError
from astra_tune.export.convert import permute_rows, write_gguf
from astra_tune.export.stage import ExportResult, export_model
from astra_tune.export.vocab import detect_pre_tokenizer
from astra_tune.recipe import ExportConfig


def fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {
        k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.t")
    }


def tensors(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2"])
def exported(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    tiny_mistral_dir: Path,
    tiny_qwen2_dir: Path,
) -> tuple[str, Path, ExportResult]:
    model_dir = {"llama": tiny_model_dir, "mistral": tiny_mistral_dir, "qwen2": tiny_qwen2_dir}[
        request.param
    ]
    out = tmp_path_factory.mktemp(f"export-{request.param}")
    config = ExportConfig(quant=["f16", "q8_0", "q4_k_m"], output_dir=str(out))
    return request.param, model_dir, export_model(str(model_dir), config)


def test_every_file_is_written_and_verified_in_llama_cpp(
    exported: tuple[str, Path, ExportResult],
) -> None:
    arch, _, result = exported
    names = sorted(p.name for p in result.out_dir.iterdir())
    assert names == sorted(
        ["model-f16.gguf", "model-q8_0.gguf", "model-q4_k_m.gguf", "verify.json", "Modelfile"]
    )
    assert "\nFROM ./model-q4_k_m.gguf\n" in (result.out_dir / "Modelfile").read_text()
    by_type = {r.qtype: r for r in result.reports}
    f16 = by_type["f16"]
    assert f16.passed, f16.failures
    assert f16.positions >= 512
    assert f16.top1 is not None
    assert f16.top1 >= 0.99
    assert f16.kl_mean is not None
    assert f16.kl_mean < 1e-4
    assert f16.greedy_match is True
    assert f16.tokenization == "12/12"
    assert f16.template is True
    assert f16.eot_is_eog is True
    assert f16.reader is True
    assert f16.reader_max_abs_diff == 0.0
    for report in result.reports:  # quantized files may warn on quality, never fail
        assert report.failures == [], (arch, report.qtype, report.failures)
        assert report.tokenization == "12/12"
    # Quantization costs agreement: the KL ordering must follow the bits.
    assert by_type["f16"].kl_mean < by_type["q8_0"].kl_mean < by_type["q4_k_m"].kl_mean  # type: ignore[operator]
    written = json.loads((result.out_dir / "verify.json").read_text())
    assert written["passed"] is True
    assert [f["qtype"] for f in written["files"]] == ["f16", "q8_0", "q4_k_m"]


def test_hyperparameters_and_tokenizer_metadata(exported: tuple[str, Path, ExportResult]) -> None:
    arch, model_dir, result = exported
    config = json.loads((model_dir / "config.json").read_text())
    meta = fields(result.out_dir / "model-f16.gguf")
    prefix = "qwen2" if arch == "qwen2" else "llama"  # llama.cpp runs mistral as llama
    assert meta["general.architecture"] == prefix
    assert meta[f"{prefix}.block_count"] == config["num_hidden_layers"]
    assert meta[f"{prefix}.embedding_length"] == config["hidden_size"]
    assert meta[f"{prefix}.feed_forward_length"] == config["intermediate_size"]
    assert meta[f"{prefix}.attention.head_count"] == config["num_attention_heads"]
    assert meta[f"{prefix}.attention.head_count_kv"] == config["num_key_value_heads"]
    assert meta[f"{prefix}.context_length"] == config["max_position_embeddings"]
    assert meta[f"{prefix}.rope.freq_base"] == pytest.approx(
        config["rope_parameters"]["rope_theta"]
    )
    assert meta[f"{prefix}.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert meta["tokenizer.chat_template"]
    if arch == "mistral":
        assert meta["tokenizer.ggml.model"] == "llama"
        assert meta["tokenizer.ggml.add_bos_token"] is True
        assert meta["tokenizer.ggml.eos_token_id"] == 2
        assert meta["tokenizer.ggml.eot_token_id"] == 2  # </s> ends each [INST] answer
    else:
        assert meta["tokenizer.ggml.model"] == "gpt2"
        # The same SmolLM2 vocabulary; transformers gives a qwen2 model Qwen2's own splitter.
        assert meta["tokenizer.ggml.pre"] == ("qwen2" if arch == "qwen2" else "smollm")
        assert meta["tokenizer.ggml.add_bos_token"] is False
        assert meta["tokenizer.ggml.eot_token_id"] == 2  # <|im_end|>


def test_q_and_k_rows_are_permuted_for_llama_only(
    exported: tuple[str, Path, ExportResult], tmp_path: Path
) -> None:
    arch, model_dir, _ = exported
    from transformers import AutoTokenizer

    out = write_gguf(
        model_dir,
        tmp_path / "f32.gguf",
        "f32",
        tokenizer=AutoTokenizer.from_pretrained(model_dir),
        metadata={"name": "t"},
    )
    config = json.loads((model_dir / "config.json").read_text())
    source = load_file(str(model_dir / "model.safetensors"))
    written = tensors(out.path)
    q = np.asarray(written["blk.0.attn_q.weight"].data)
    k = np.asarray(written["blk.0.attn_k.weight"].data)
    hf_q = source["model.layers.0.self_attn.q_proj.weight"]
    hf_k = source["model.layers.0.self_attn.k_proj.weight"]
    if arch == "qwen2":
        np.testing.assert_array_equal(q, hf_q)
        assert "blk.0.attn_q.bias" in written
    else:
        assert not np.array_equal(q, hf_q)
        np.testing.assert_array_equal(q, permute_rows(hf_q, config["num_attention_heads"]))
        np.testing.assert_array_equal(k, permute_rows(hf_k, config["num_key_value_heads"]))
    assert "output.weight" not in written  # tied embeddings: llama.cpp reuses token_embd
    np.testing.assert_array_equal(
        np.asarray(written["token_embd.weight"].data), source["model.embed_tokens.weight"]
    )


def test_permute_rows_interleaves_rope_halves() -> None:
    # One head of 4 dims: HF pairs dims (0,2),(1,3); llama.cpp pairs neighbours (0,1),(2,3).
    rows = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert permute_rows(rows, 1).ravel().tolist() == [0, 2, 1, 3]


def test_unsupported_architecture_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = tmp_path / "gpt2"
    model.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (model / "config.json").write_text(json.dumps(config))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (model / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(ModelError) as caught:
        export_model(str(model), ExportConfig(quant=["f16"], output_dir=str(tmp_path / "out")))
    message = str(caught.value)
    assert "GPT2LMHeadModel" in message
    assert "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM" in message
    assert not list((tmp_path / "out").glob("*.gguf"))


def test_pre_tokenizer_is_named_by_hash_or_structure(smollm2_tokenizer: Any) -> None:
    assert detect_pre_tokenizer(smollm2_tokenizer, {}) == "smollm"

    class Renamed:
        """A tokenizer whose ids hash to nothing known, so only its structure can tell."""

        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return [len(text)]

    llama3 = {
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {
                        "Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                        "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
                    },
                },
                {"type": "ByteLevel", "use_regex": False},
            ],
        }
    }
    assert detect_pre_tokenizer(Renamed(), llama3) == "llama-bpe"
    unknown = {"pre_tokenizer": {"type": "Whitespace"}}
    with pytest.raises(ModelError, match=r"export\.tokenizer_pre"):
        detect_pre_tokenizer(Renamed(), unknown)


def test_a_failed_conversion_leaves_no_file(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import astra_tune.export.convert as convert

    calls = {"n": 0}
    original = convert.encode

    def failing(data: Any, qtype: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return original(data, qtype)

    monkeypatch.setattr(convert, "encode", failing)
    from transformers import AutoTokenizer

    with pytest.raises(OSError, match="disk full"):
        write_gguf(
            tiny_model_dir,
            tmp_path / "m.gguf",
            "f16",
            tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
            metadata={},
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("rope", "expected"),
    [
        ({"rope_type": "linear", "factor": 4.0}, {"rope.scaling.type": "linear"}),
        (
            {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 512,
            },
            {"rope.scaling.type": "yarn", "rope.scaling.original_context_length": 512},
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            {},
        ),
    ],
)
def test_rope_scaling_is_carried(
    tmp_path: Path, tiny_model_dir: Path, rope: dict[str, Any], expected: dict[str, Any]
) -> None:
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["rope_parameters"] = {"rope_theta": 10000.0, **rope}
    (model / "config.json").write_text(json.dumps(config))
    out = write_gguf(
        model,
        tmp_path / "m.gguf",
        "f16",
        tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir),
        metadata={},
    ).path
    meta = fields(out)
    for key, value in expected.items():
        assert meta[f"llama.{key}"] == value
    if rope["rope_type"] == "linear":
        assert meta["llama.rope.scaling.factor"] == 4.0
    written = tensors(out)
    if rope["rope_type"] == "llama3":
        # head_dim 16 -> 8 frequencies; the high ones unscaled, the low ones by `factor`.
        factors = np.asarray(written["rope_freqs.weight"].data)
        assert factors.shape == (8,)
        assert factors[0] == 1.0
        assert factors[-1] == pytest.approx(8.0)
    else:
        assert "rope_freqs.weight" not in written
    # llama.cpp accepts every variant (a wrong key or shape fails to load).
    from llama_cpp import Llama

    llm = Llama(str(out), n_ctx=64, verbose=False)
    try:
        assert llm.n_vocab() == config["vocab_size"]
    finally:
        llm.close()


def test_a_wrong_pre_tokenizer_fails_verification(tmp_path: Path, tiny_qwen2_dir: Path) -> None:
    from tests.cli_runner import run_astra

    # Qwen2's splitter keeps "\r\n" together; llama.cpp's gpt-2 one does not.
    out = tmp_path / "out"
    result = run_astra(
        "export", str(tiny_qwen2_dir), "-q", "f16", "--tokenizer-pre", "gpt-2", "-o", str(out)
    )
    assert result.exit_code == 1
    assert "verification failed for model-f16.gguf" in result.stderr
    assert "tokenization differs" in result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"] is False
    assert report["files"][0]["tokenization"] == "11/12"
