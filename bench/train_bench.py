"""Training throughput and memory on the default model (SmolLM2-135M), CPU, fp32.

Three ways to run LoRA r=16 on all linear layers over the same variable-length
instruction set (lengths spread like Dolly's: log-normal, median ~150 tokens):

  (a) TRL SFTTrainer with its defaults: batches of 8 padded to their longest example
  (b) astra train: examples packed into rows of 1024 tokens, 2 rows a step
  (c) dense baseline: forward + backward + AdamW on full random 2x1024 batches, no data
      pipeline at all -- the practical limit for this model on this machine

Each runs in its own process (so peak RSS is its own). Throughput counts real,
non-padding tokens. `--memory` adds full / LoRA / QLoRA runs of astra train.

    .venv/bin/python bench/train_bench.py [--steps 6] [--memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
ROWS, ROW_TOKENS = 2, 1024


def make_dataset(path: Path, n: int = 600, seed: int = 0) -> None:
    """Instruction records whose token lengths are log-normal like Dolly's."""
    rng = random.Random(seed)
    words = ["the", "a", "model", "data", "answer", "question", "learn", "train", "token",
             "value", "small", "robot", "city"]  # fmt: skip
    with path.open("w") as handle:
        for i in range(n):
            total = min(1000, max(12, int(rng.lognormvariate(5.0, 0.75))))
            prompt_len = max(4, int(total * rng.uniform(0.1, 0.5)))
            prompt = " ".join(rng.choices(words, k=prompt_len))
            answer = " ".join(rng.choices(words, k=total - prompt_len))
            handle.write(
                json.dumps({"instruction": f"{i}: {prompt}?", "output": answer + "."}) + "\n"
            )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip


def worker_trl(prepared: Path, steps: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from astra_tune.models.resolve import resolve_model

    path = resolve_model(MODEL).path
    rows = [json.loads(line) for line in (prepared / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    times: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "num_tokens" in logs:
                times.append((time.perf_counter(), float(logs["num_tokens"])))

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps + 1, logging_steps=1,
                     use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                     disable_tqdm=True)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(path),
                         peft_config=lora_config(), callbacks=[Clock()])  # fmt: skip
    trainer.train()
    (t0, n0), (t1, n1) = times[0], times[-1]  # the first step is warm-up
    return {"tokens_per_s": (n1 - n0) / (t1 - t0), "peak_rss_mb": peak_rss_mb()}


def worker_astra(prepared: Path, steps: int, method: str = "lora") -> dict[str, Any]:
    from astra_tune.recipe import validate_recipe
    from astra_tune.train.run import train_model

    out = Path(tempfile.mkdtemp()) / "run"
    recipe = validate_recipe({
        "name": "bench", "base_model": MODEL,
        "train": {"method": method, "data_dir": str(prepared), "output_dir": str(out),
                  "max_steps": steps + 1, "batch_size": ROWS, "max_seq_len": ROW_TOKENS,
                  "dtype": "float32", "eval_steps": None, "save_steps": 10_000,
                  "warmup_ratio": 0.0},
    })  # fmt: skip
    result = train_model(recipe)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
    return {
        "tokens_per_s": sum(rates) / len(rates),
        "peak_rss_mb": peak_rss_mb(),
        "trainable": result.trainable_parameters,
        "total": result.total_parameters,
    }


def worker_dense(steps: int) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from astra_tune.models.resolve import resolve_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(MODEL).path, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, lora_config())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (ROWS, ROW_TOKENS))
    durations = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        durations.append(time.perf_counter() - start)
    return {
        "tokens_per_s": ROWS * ROW_TOKENS * steps / sum(durations[1:]),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_worker(name: str, prepared: Path, steps: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--prepared",
        str(prepared),
        "--steps",
        str(steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after 1 warm-up)")
    parser.add_argument("--memory", action="store_true", help="also full / LoRA / QLoRA table")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", default="trl,astra-lora,dense", help="comparison workers to run (comma-separated)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        method = args.worker.removeprefix("astra-")
        result = (worker_trl(args.prepared, args.steps) if args.worker == "trl"
                  else worker_dense(args.steps) if args.worker == "dense"
                  else worker_astra(args.prepared, args.steps, method))  # fmt: skip
        print(json.dumps(result))
        return

    from astra_tune.data.prepare import prepare_data
    from astra_tune.recipe import DataConfig

    work = Path(tempfile.mkdtemp(prefix="astra-train-bench-"))
    make_dataset(work / "dolly-like.jsonl")
    config = DataConfig.model_validate(
        {"sources": [str(work / "dolly-like.jsonl")], "split": {"val": 0, "test": 0},
         "dedup": {"near": False}}
    )  # fmt: skip
    report = prepare_data(config, work / "prepared", base_model=MODEL, seed=0).report
    tokens = report["tokens"]["train"]
    print(f"data: {tokens['count']} examples, tokens p5/p50/p95/max "
          f"{tokens['p5']}/{tokens['p50']}/{tokens['p95']}/{tokens['max']}",
          flush=True)  # fmt: skip

    results: dict[str, Any] = {"data": {k: tokens[k] for k in ("count", "p5", "p50", "p95", "max")}}
    for name, label in (("trl", "(a) TRL SFTTrainer defaults"), ("astra-lora", "(b) astra train"),
                        ("dense", "(c) dense baseline")):  # fmt: skip
        if name not in args.only.split(","):
            continue
        results[name] = run_worker(name, work / "prepared", args.steps)
        print(f"{label:32s} {results[name]['tokens_per_s']:8.1f} tokens/s   "
              f"peak RSS {results[name]['peak_rss_mb']:7.0f} MB", flush=True)  # fmt: skip
    if {"trl", "astra-lora", "dense"} <= results.keys():
        b = results["astra-lora"]["tokens_per_s"]
        print(f"(b)/(a) = {b / results['trl']['tokens_per_s']:.2f}x   "
              f"(b)/(c) = {b / results['dense']['tokens_per_s']:.2f}x")  # fmt: skip
    if args.memory:
        print("\nmethod  trainable params   peak RSS   tokens/s")
        for method in ("full", "lora", "qlora"):
            name = f"astra-{method}"
            if name not in results:
                results[name] = run_worker(name, work / "prepared", args.steps)
            r = results[name]
            print(f"{method:6s} {r['trainable']:>16,} {r['peak_rss_mb']:8.0f} MB "
                  f"{r['tokens_per_s']:9.1f}",
                  flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
