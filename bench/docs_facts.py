"""Does augmentation teach the facts of a real docs folder? Fact recall with and without.

The docs are Ollama's FAQ (bench/data/ollama-faq: 27 question headings, MIT licence); the
held-out questions are rephrased by hand, none in a heading's words. Two runs of the same
recipe on the default model, the same number of optimizer steps:

  (a) plain: the docs as `astra data prepare` reads them (each heading a question)
  (b) augmented: plus `data.augment` through the embedded model served by llama.cpp:
      questions from each passage and FAQ answer (one per fact, grounded) and rewordings
      of every heading

Each run's eval scores the untrained model too, so the base, (a) and (b) answer the same
questions; differences come with paired bootstrap 95% intervals.

    .venv/bin/python bench/docs_facts.py [--steps 60] [--out /tmp/docs-facts] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
DOCS = HERE / "data" / "ollama-faq"


def recipe(name: str, out: Path, steps: int, augment: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "sources": [str(DOCS / "docs"), {"path": str(DOCS / "test.jsonl"), "assign_to": "test"}],
        "split": {"val": 0.0, "test": 0.0},
    }
    if augment is not None:
        data["augment"] = augment
    return {
        "name": name,
        "base_model": "smollm2-135m-instruct",
        "seed": 0,
        "data": data,
        "train": {
            "method": "lora",
            "output_dir": str(out / name),
            "max_steps": steps,
            "learning_rate": 1.0e-3,
            "batch_size": 1,
            "max_seq_len": 1024,  # the longest FAQ answer fits whole
            "save_steps": steps,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        },
        "eval": {"metrics": ["facts"], "max_new_tokens": 64},
        "registry": {"push": False},
    }


def run(path: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    astra = Path(sys.executable).with_name("astra")
    subprocess.run([str(astra), "run", str(path), "--until", "eval"], check=True, env=env)
    return time.perf_counter() - started


def per_example(run_dir: Path, key: str) -> np.ndarray:
    rows = [json.loads(line) for line in (run_dir / "eval" / "samples.jsonl").open()]
    values = [row[key]["facts"] for row in rows]
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def bootstrap(values: np.ndarray, rounds: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% interval over examples that have key facts (paired when 2-D)."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(rounds, len(values)))
    means = np.nanmean(values[index], axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.nanmean(values)), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="Optimizer steps per run.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/docs-facts"))
    parser.add_argument("--paraphrase", type=int, default=3, help="Rewordings per heading.")
    parser.add_argument("--questions", type=int, default=2, help="Questions asked per fact.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ASTRA_HOME": str(args.out / "home")}
    augment = {
        "model": "smollm2-135m-instruct",
        "questions_from_docs": True,
        "questions_per_fact": args.questions,
        "paraphrase": args.paraphrase,
        "concurrency": 2,
    }
    arms = {"plain": None, "augmented": augment}
    seconds: dict[str, float] = {}
    for name, extra in arms.items():
        path = args.out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe(f"docs-{name}", args.out, args.steps, extra)))
        seconds[name] = run(path, env)
    plain_dir, augmented_dir = args.out / "docs-plain", args.out / "docs-augmented"
    base = per_example(plain_dir, "against_scores")
    plain = per_example(plain_dir, "scores")
    augmented = per_example(augmented_dir, "scores")
    train_rows = {
        name: sum(1 for _ in (args.out / f"docs-{name}" / folder / "train.jsonl").open())
        for name, folder in (("plain", "prepared"), ("augmented", "augmented"))
    }
    result = {
        "questions": int(np.sum(~np.isnan(plain))),
        "steps": args.steps,
        "train_records": train_rows,
        "seconds": seconds,
        "base": bootstrap(base),
        "plain": bootstrap(plain),
        "augmented": bootstrap(augmented),
        "augmented_minus_plain": bootstrap(augmented - plain),
        "plain_minus_base": bootstrap(plain - base),
    }
    print(f"\nfact recall on {result['questions']} hand-rephrased questions, {args.steps} steps")
    for key in ("base", "plain", "augmented", "augmented_minus_plain", "plain_minus_base"):
        value, low, high = result[key]
        print(f"  {key:24s} {value:6.1f}  [{low:+.1f}, {high:+.1f}]")
    print(f"  train records: {train_rows}; seconds: {seconds}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
