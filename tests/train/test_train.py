from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from astra_tune.errors import ConfigError, DataError
from astra_tune.recipe import validate_recipe
from astra_tune.train.dataset import preflight, tokenize_split
from astra_tune.train.run import TrainResult, train_model
from tests.cli_runner import run_astra
from tests.data.helpers import FIXTURES


def recipe(tiny_model_dir: Path, out: Path, **train: Any) -> Any:
    return validate_recipe(
        {
            "name": "tiny-run",
            "base_model": str(tiny_model_dir),
            "seed": 0,
            "data": {"sources": ["builtin:orrery"], "split": {"val": 0.1, "test": 0.0}},
            "train": {
                "output_dir": str(out),
                "max_steps": 8,
                "batch_size": 2,
                "max_seq_len": 256,
                "learning_rate": 3e-3,
                "eval_steps": 4,
                "save_steps": 4,
                "warmup_ratio": 0.0,
                **train,
            },
        }
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> TrainResult:
    return train_model(recipe(tiny_model_dir, tmp_path_factory.mktemp("runs") / "lora"))


def test_lora_run_writes_everything(lora_run: TrainResult) -> None:
    run = lora_run.run_dir
    assert lora_run.output_dir == run / "adapter"
    adapter = {p.name for p in (run / "adapter").iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    } <= adapter
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "name: tiny-run" in (run / "recipe.yaml").read_text()
    lineage = json.loads((run / "lineage.json").read_text())
    train_file = run / "prepared" / "train.jsonl"
    assert (
        lineage["data"]["sha256"]["train.jsonl"]
        == hashlib.sha256(train_file.read_bytes()).hexdigest()
    )
    assert lineage["method"] == "lora"
    assert lineage["libraries"]["peft"]
    assert lineage["parameters"]["trainable"] == lora_run.trainable_parameters
    assert 0 < lora_run.trainable_parameters < lora_run.total_parameters


def test_metrics_cover_every_step_and_validation(lora_run: TrainResult) -> None:
    rows = [
        json.loads(line) for line in (lora_run.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 9))
    assert all({"lr", "grad_norm"} <= r.keys() for r in rows if "loss" in r)
    assert [r["step"] for r in rows if "val_loss" in r][:2] == [4, 8]
    assert any("tokens_per_s" in r for r in rows)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.05  # it learns


def test_only_the_adapter_changed(lora_run: TrainResult, tiny_model_dir: Path) -> None:
    weights = load_file(lora_run.output_dir / "adapter_model.safetensors")
    assert weights
    assert all("lora_" in name for name in weights)
    assert any(float(t.abs().sum()) > 0 for name, t in weights.items() if "lora_B" in name)


def test_chat_with_the_run(lora_run: TrainResult) -> None:
    result = run_astra(
        "chat", str(lora_run.run_dir), "-p", "hello", "--temperature", "0", "--max-tokens", "4"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()


def test_existing_run_needs_resume(lora_run: TrainResult, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a run"):
        train_model(recipe(tiny_model_dir, lora_run.run_dir))


def test_resume_without_checkpoint_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        train_model(recipe(tiny_model_dir, tmp_path / "fresh"), resume=True)


@pytest.mark.parametrize("method", ["full", "qlora"])
def test_full_and_qlora(tmp_path: Path, tiny_model_dir: Path, method: str) -> None:
    result = train_model(
        recipe(tiny_model_dir, tmp_path / method, method=method, max_steps=3, eval_steps=None)
    )
    if method == "full":
        assert result.output_dir.name == "model"
        assert (result.output_dir / "config.json").is_file()
        assert result.trainable_parameters == result.total_parameters
    else:
        assert result.output_dir.name == "adapter"
        assert result.trainable_parameters < result.total_parameters
    assert result.global_step == 3


def test_preflight_catches_untrained_and_cut_answers(smollm2_tokenizer: Any) -> None:
    long_answer = {
        "messages": [
            {"role": "user", "content": "Talk."},
            {"role": "assistant", "content": "word " * 200},
        ],
        "source": "x.jsonl:2",
    }
    no_answer = {"messages": [{"role": "user", "content": "Hi"}], "source": "x.jsonl:1"}
    split = tokenize_split([no_answer], smollm2_tokenizer, max_seq_len=64, train_on_prompt=False)
    with pytest.raises(DataError) as info:
        preflight(split, max_seq_len=64, truncate_ok=False, name="train")
    assert info.value.where == "x.jsonl:1"
    assert "<|im_start|>user\nHi<|im_end|>" in info.value.what  # the rendered example
    split = tokenize_split([long_answer], smollm2_tokenizer, max_seq_len=64, train_on_prompt=False)
    with pytest.raises(DataError) as info:
        preflight(split, max_seq_len=64, truncate_ok=False, name="train")
    assert "1 train example(s) are longer than max_seq_len=64" in info.value.what
    assert "--truncate-ok" in (info.value.fix or "")
    preflight(split, max_seq_len=64, truncate_ok=True, name="train")
    assert len(split.features[0]["input_ids"]) == 64


def test_cli_train_reports_preflight_errors(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe_file = tmp_path / "run.yaml"
    recipe_file.write_text(
        f"name: cut\nbase_model: {tiny_model_dir}\n"
        f"data:\n  sources: [{FIXTURES / 'alpaca.jsonl'}]\n  split: {{val: 0, test: 0}}\n"
        f"train:\n  output_dir: {tmp_path / 'run'}\n  max_seq_len: 16\n"
    )
    result = run_astra("train", str(recipe_file))
    assert result.exit_code == 2
    assert "longer than max_seq_len=16" in result.stderr
    assert "Traceback" not in result.stderr


def test_padded_batches_without_packing(tmp_path: Path, tiny_model_dir: Path) -> None:
    result = train_model(
        recipe(tiny_model_dir, tmp_path / "padded", packing=False, max_steps=3, eval_steps=None)
    )
    assert result.global_step == 3
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]


def test_early_stopping_keeps_the_best_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    # No validation gain reaches a threshold of 1.0, so patience 2 stops at the third
    # evaluation (step 6) instead of running 40 steps.
    result = train_model(
        recipe(
            tiny_model_dir,
            tmp_path / "early",
            max_steps=40,
            eval_steps=2,
            early_stopping_patience=2,
            early_stopping_threshold=1.0,
        )
    )
    assert result.global_step == 6
    rows = [
        json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    evaluations = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r][:3]
    assert [step for step, _ in evaluations] == [2, 4, 6]
    best_step, best_loss = min(evaluations, key=lambda sv: sv[1])
    state = result.run_dir / "checkpoints" / "checkpoint-6" / "trainer_state.json"
    assert json.loads(state.read_text())["best_model_checkpoint"].endswith(
        f"checkpoint-{best_step}"
    )
    # The model saved and evaluated last is the restored best one.
    assert result.final_val_loss == pytest.approx(best_loss, rel=1e-4)


def test_tokens_are_counted_on_every_step_across_epochs(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # Two steps per epoch: the data loader fetches one batch ahead, so counting tokens
    # where batches are collated ran a batch early and stood still at each epoch's end.
    source = tmp_path / "four.jsonl"
    source.write_text("".join(
        json.dumps({"instruction": f"Question number {i} about the orrery?",
                    "output": f"Answer {i}: " + "the brass gears turn slowly " * 2})
        + "\n"
        for i in range(4)
    ))  # fmt: skip
    run = recipe(tiny_model_dir, tmp_path / "epochs", max_steps=None, epochs=2, max_seq_len=100,
                 eval_steps=None, save_steps=100)  # fmt: skip
    run = run.model_copy(update={"data": run.data.model_copy(update={
        "sources": [run.data.sources[0].model_copy(update={"path": str(source)})],
        "split": run.data.split.model_copy(update={"val": 0.0, "test": 0.0}),
    })})  # fmt: skip
    result = train_model(run)
    assert result.global_step == 4
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text()
            .splitlines() if "loss" in json.loads(line)]  # fmt: skip
    counts = [r["num_tokens"] for r in rows]
    assert len(counts) == 4
    assert all(later > earlier for earlier, later in itertools.pairwise(counts))
    assert all(r["tokens_per_s"] > 0 for r in rows[1:])
    # Both epochs train on the same four records: they count the same tokens.
    assert counts[1] == counts[3] - counts[1]
