"""train.compile: the compiled layers train the same adapter as eager ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from astra_tune.train.run import train_model
from tests.train.test_train import recipe


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_compiled_run_follows_the_eager_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = {"max_steps": 4, "eval_steps": None, "save_steps": 4, "dtype": "float32"}
    from torch._dynamo.utils import counters

    eager = train_model(recipe(tiny_model_dir, tmp_path / "eager", **settings))
    counters.clear()
    compiled = train_model(recipe(tiny_model_dir, tmp_path / "compiled", compile=True,
                                  **settings))  # fmt: skip
    assert compiled.global_step == eager.global_step == 4
    assert counters["stats"]["unique_graphs"] > 0  # dynamo compiled the layers
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-3)
    a = load_file(tmp_path / "eager" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "compiled" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()  # module names unchanged by the in-place compile
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-4, name
