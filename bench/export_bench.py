"""GGUF export time and peak memory on the default model (SmolLM2-135M, fp32 on disk).

Each job runs in its own process, so its peak RSS is its own:

  baseline     import everything an export imports, convert nothing (the floor)
  f16          astra export -q f16 --no-verify      (HF -> GGUF, streamed)
  q4_k_m       astra export -q q4_k_m --no-verify   (f16 intermediate + llama.cpp quantizer)
  f16+verify   astra export -q f16                  (plus the PyTorch reference and checks)
  full-load    the naive way, for comparison: load the whole model with transformers,
               then convert each tensor (the model and its f16 copy in memory at once)

The bar (issue 5) is peak RSS <= 1.5x the fp32 model's size for the f16 and q4_k_m
exports; the table gives absolute peaks and peaks above the import baseline.

    .venv/bin/python bench/export_bench.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
JOBS = ("baseline", "f16", "q4_k_m", "f16+verify", "full-load")


def run_job(job: str, out: Path) -> dict[str, Any]:
    """Inside the child process: do one job, report seconds and peak RSS."""
    import astra_tune.export.stage as stage
    from astra_tune.models.resolve import resolve_model
    from astra_tune.recipe import ExportConfig

    model_dir = resolve_model(MODEL).path
    if job == "baseline":  # what every export imports before it converts anything
        import llama_cpp  # noqa: F401
        import torch
        import transformers  # noqa: F401
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(model_dir)
    started = time.perf_counter()
    if job in ("f16", "q4_k_m", "f16+verify"):
        qtype = job.split("+")[0]
        config = ExportConfig(quant=[qtype], verify=job.endswith("verify"), output_dir=str(out))
        stage.export_model(MODEL, config)
    elif job == "full-load":
        import numpy as np
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        copies = {k: v.numpy().astype(np.float16) for k, v in model.state_dict().items()}
        del copies
    seconds = time.perf_counter() - started
    return {
        "job": job,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": sum(p.stat().st_size for p in model_dir.glob("*.safetensors")) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    if args.job:
        print(json.dumps(run_job(args.job, args.out)))
        return
    results = []
    for job in JOBS:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [sys.executable, __file__, "--job", job, "--out", tmp],
                capture_output=True,
                text=True,
                check=True,
            )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {job}: {results[-1]['seconds']:.1f} s", file=sys.stderr)
    base = results[0]["peak_rss_mb"]
    model_mb = results[0]["model_mb"]
    print(f"fp32 model: {model_mb:.0f} MB; bar 1.5x = {1.5 * model_mb:.0f} MB")
    print(f"{'job':<12} {'seconds':>8} {'peak RSS MB':>12} {'above imports':>14} {'x model':>8}")
    for r in results:
        above = r["peak_rss_mb"] - base
        print(
            f"{r['job']:<12} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {above:>14.0f} "
            f"{r['peak_rss_mb'] / model_mb:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
