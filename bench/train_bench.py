"""Training throughput and memory on the default model (SmolLM2-135M), CPU.

Three ways to run LoRA r=16 on all linear layers over the same variable-length
instruction set (lengths spread like Dolly's: log-normal, median ~150 tokens):

  (a) TRL SFTTrainer with its defaults: batches of 8 padded to their longest example
  (b) astra train: examples packed into rows of 1024 tokens, 2 rows a step
  (c) dense baseline: forward + backward + AdamW on full random 2x1024 batches, no data
      pipeline at all -- the practical limit for this model on this machine

All run in the dtype `astra train` picks on this machine (bf16 where the CPU has native
bf16, else fp32; `--dtype` forces one): frozen weights in that dtype, LoRA weights and
optimizer state in fp32, matmuls under autocast. Where that dtype is bf16, (d) runs astra
train in fp32 too, for the bf16/fp32 ratio. Each runs in its own process (so peak RSS is
its own). Throughput counts real, non-padding tokens. Model FLOP utilization (MFU) is
model FLOPs per token (LoRA: 4 N + 6 N_lora, full: 6 N, N = the linear layers and the
head at every position; attention scores left out) times tokens/s, over the peak of one
large matmul in the same dtype on the same cores. `--memory` adds full / LoRA / QLoRA;
`--compile` adds the dense loop with torch.compile per decoder layer, a reference for
what compiler fusion gives (astra train had a `compile` option until its eager path caught
up: 696.7 compiled against 728.5 eager tokens/s in bf16, 2026-12-04).

    .venv/bin/python bench/train_bench.py [--steps 6] [--dtype auto|float32|bfloat16]
        [--memory] [--compile] [--json out.json]
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


def resolve_bench_dtype(name: str) -> str:
    from astra_tune.hardware import detect_hardware, recommended_dtype

    return recommended_dtype(detect_hardware())[0] if name == "auto" else name


def weights_dtype(dtype: str) -> Any:
    """The frozen LoRA base's dtype, as astra train loads it."""
    import torch

    return getattr(torch, dtype)


def matmul_peak_flops(dtype: str, size: int = 2048, seconds: float = 2.0) -> float:
    """Best FLOP/s of one size x size matmul in `dtype` on this process's threads."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    for _ in range(2):
        a @ b  # oneDNN picks and caches its kernel on the first calls
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def linear_parameters() -> int:
    """Weights that take part in a matmul per token: every linear layer and the head."""
    from transformers import AutoConfig

    from astra_tune.models.resolve import resolve_model

    c = AutoConfig.from_pretrained(resolve_model(MODEL).path)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    per_layer = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * kv
    per_layer += 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip


def worker_trl(prepared: Path, steps: int, dtype: str) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from astra_tune.models.resolve import resolve_model
    from astra_tune.train.model import parameter_counts

    path = resolve_model(MODEL).path
    rows = [json.loads(line) for line in (prepared / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    times: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "num_tokens" in logs:
                times.append((time.perf_counter(), float(logs["num_tokens"])))

    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype(dtype))
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=steps + 1, logging_steps=1,
                     use_cpu=True, bf16=dtype == "bfloat16", report_to="none",
                     save_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(path),
                         peft_config=lora_config(), callbacks=[Clock()])  # fmt: skip
    trainer.train()
    (t0, n0), (t1, n1) = times[0], times[-1]  # the first step is warm-up
    adapter = next(p for n, p in model.named_parameters() if "lora_A" in n)
    return {"tokens_per_s": (n1 - n0) / (t1 - t0), "peak_rss_mb": peak_rss_mb(),
            "adapter_dtype": str(adapter.dtype),
            "trainable": parameter_counts(trainer.model)[0]}  # fmt: skip


def worker_astra(prepared: Path, steps: int, dtype: str, method: str = "lora") -> dict[str, Any]:
    from astra_tune.recipe import validate_recipe
    from astra_tune.train.run import train_model

    out = Path(tempfile.mkdtemp()) / "run"
    recipe = validate_recipe({
        "name": "bench", "base_model": MODEL,
        "train": {"method": method, "data_dir": str(prepared), "output_dir": str(out),
                  "max_steps": steps + 1, "batch_size": ROWS, "max_seq_len": ROW_TOKENS,
                  "dtype": dtype, "eval_steps": None, "save_steps": 10_000,
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


def worker_dense(steps: int, dtype: str, compiled: bool = False) -> dict[str, Any]:
    import contextlib

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from astra_tune.models.resolve import resolve_model
    from astra_tune.train.model import keep_inputs_in_autocast_dtype, parameter_counts

    torch.manual_seed(0)
    path = resolve_model(MODEL).path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights_dtype(dtype))
    model.config.use_cache = False
    model = get_peft_model(model, lora_config())  # adapters in fp32 over a bf16 base
    if dtype != "float32":
        keep_inputs_in_autocast_dtype(model)  # as astra train: autocast picks the dtype
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())  # fmt: skip
    model.train()
    warmup = 1
    if compiled:
        for layer in model.get_base_model().model.layers:
            layer.compile()  # regional: one graph, reused by the identical layers
        warmup = 3  # forward, backward and the first AdamW step compile on their own
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (ROWS, ROW_TOKENS))
    durations = []
    for _ in range(steps + warmup):
        start = time.perf_counter()
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        durations.append(time.perf_counter() - start)
    return {
        "tokens_per_s": ROWS * ROW_TOKENS * steps / sum(durations[warmup:]),
        "peak_rss_mb": peak_rss_mb(),
        "warmup_s": sum(durations[:warmup]),
        "trainable": parameter_counts(model)[0],
    }


def run_worker(name: str, prepared: Path, steps: int, dtype: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        name,
        "--prepared",
        str(prepared),
        "--steps",
        str(steps),
        "--dtype",
        dtype,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after 1 warm-up)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="training dtype of every contender (auto: what astra train picks)",
    )
    parser.add_argument("--memory", action="store_true", help="also full / LoRA / QLoRA table")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also the dense loop with torch.compile per decoder layer",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--only", default="trl,astra-lora,dense", help="comparison workers to run (comma-separated)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = resolve_bench_dtype(args.dtype)

    if args.worker:
        print(json.dumps(run_in_process(args.worker, args.prepared, args.steps, dtype)))
        return

    from astra_tune.hardware import detect_hardware

    hw = detect_hardware()
    shown = sorted(hw.cpu_flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    print(f"machine: {hw.cpu_model}, {os.cpu_count()} threads, flags {' '.join(shown)}")
    print(f"dtype: {dtype}" + (" (what astra train picks here)" if args.dtype == "auto" else
                              " (forced)"), flush=True)  # fmt: skip
    peaks = {name: matmul_peak_flops(name) for name in {dtype, "float32"}}
    print("matmul peak (2048^3): " + ", ".join(f"{n} {v / 1e9:.0f} GFLOP/s"
                                               for n, v in peaks.items()), flush=True)  # fmt: skip
    n_linear = linear_parameters()

    work = Path(tempfile.mkdtemp(prefix="astra-train-bench-"))
    prepared = prepare_bench_data(work)
    results: dict[str, Any] = {
        "machine": {"cpu": hw.cpu_model, "flags": shown, "threads": os.cpu_count()},
        "dtype": dtype, "matmul_peak_flops": peaks, "linear_parameters": n_linear,
        "data": prepared[1],
    }  # fmt: skip
    contenders = [
        ("trl", dtype, "(a) TRL SFTTrainer defaults"),
        ("astra-lora", dtype, "(b) astra train"),
        ("dense", dtype, "(c) dense baseline"),
    ]
    if dtype != "float32":
        contenders.append(("astra-lora", "float32", "(d) astra train, float32"))
    if args.compile:
        contenders.append(("dense-compiled", dtype, "(e) dense, torch.compile"))
    only = args.only.split(",") + (["dense-compiled"] if args.compile else [])
    for name, run_dtype, label in contenders:
        if name not in only:
            continue
        key = name if run_dtype == dtype else f"{name}-{run_dtype}"
        r = results[key] = run_worker(name, prepared[0], args.steps, run_dtype)
        r["dtype"] = run_dtype
        r["mfu"] = r["tokens_per_s"] * (4 * n_linear + 6 * r["trainable"]) / peaks[run_dtype]
        print(f"{label:32s} {r['tokens_per_s']:8.1f} tokens/s   MFU {100 * r['mfu']:4.1f}%   "
              f"peak RSS {r['peak_rss_mb']:7.0f} MB", flush=True)  # fmt: skip
    ratios = []
    b = results.get("astra-lora", {}).get("tokens_per_s")
    if b and "trl" in results:
        ratios.append(f"(b)/(a) = {b / results['trl']['tokens_per_s']:.2f}x")
    if b and "dense" in results:
        ratios.append(f"(b)/(c) = {b / results['dense']['tokens_per_s']:.2f}x")
    if b and "astra-lora-float32" in results:
        ratios.append(f"(b)/(d) = {b / results['astra-lora-float32']['tokens_per_s']:.2f}x")
    if "dense" in results and "dense-compiled" in results:
        e = results["dense-compiled"]
        ratios.append(f"(e)/(c) = {e['tokens_per_s'] / results['dense']['tokens_per_s']:.2f}x "
                      f"after {e['warmup_s']:.0f} s of compiling")  # fmt: skip
    if ratios:
        print("   ".join(ratios))
    if args.memory:
        memory_table(results, prepared[0], args.steps, dtype, n_linear, peaks[dtype])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def run_in_process(worker: str, prepared: Path, steps: int, dtype: str) -> dict[str, Any]:
    if worker == "trl":
        return worker_trl(prepared, steps, dtype)
    if worker in ("dense", "dense-compiled"):
        return worker_dense(steps, dtype, compiled=worker == "dense-compiled")
    return worker_astra(prepared, steps, dtype, worker.removeprefix("astra-"))


def prepare_bench_data(work: Path) -> tuple[Path, dict[str, Any]]:
    from astra_tune.data.prepare import prepare_data
    from astra_tune.recipe import DataConfig

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
    return work / "prepared", {k: tokens[k] for k in ("count", "p5", "p50", "p95", "max")}


def memory_table(results: dict[str, Any], prepared: Path, steps: int, dtype: str,
                 n_linear: int, peak: float) -> None:  # fmt: skip
    print(f"\nmethod  trainable params   peak RSS   tokens/s   MFU   ({dtype})")
    for method in ("full", "lora", "qlora"):
        name = f"astra-{method}"
        if name not in results:
            results[name] = run_worker(name, prepared, steps, dtype)
        r = results[name]
        work = 6 * n_linear if method == "full" else 4 * n_linear + 6 * r["trainable"]
        # Full fine-tuning keeps fp32 weights (bf16 only under autocast): same peak.
        r["mfu"] = r["tokens_per_s"] * work / peak
        print(f"{method:6s} {r['trainable']:>16,} {r['peak_rss_mb']:8.0f} MB "
              f"{r['tokens_per_s']:9.1f} {100 * r['mfu']:5.1f}%", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
