"""Do the run's defaults and augmentation teach the facts of a real docs folder?

The docs are Ollama's FAQ (bench/data/ollama-faq: 27 question headings, MIT licence); the
held-out questions are rephrased by hand, none in a heading's words. Each arm is one
`astra run` of the default model with LoRA (r 16) on the same docs; arms differ only in
what they name:

  old-defaults   the train defaults before sizing was automatic: 3 epochs at batch 8,
                 learning rate 2e-4 (the baseline)
  auto           today's defaults: epochs and batch sized from the data
  auto-lr1e-3    the same at learning rate 1e-3
  augmented      `auto` plus `data.augment` through the embedded model served by
                 llama.cpp: questions from each passage and FAQ answer (one per fact,
                 grounded) and rewordings of every heading
  augmented-lr1e-3, augmented-same-steps (the steps of `auto`, so only the data differs)

Each run's eval scores the untrained model too, so all arms answer the same questions;
differences come with paired bootstrap 95% intervals.

    .venv/bin/python bench/docs_facts.py [--arms auto,augmented] [--out /tmp/docs-facts]
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


ARMS: dict[str, tuple[dict[str, Any], bool]] = {
    "old-defaults": ({"epochs": 3, "batch_size": 8, "learning_rate": 2.0e-4}, False),
    "auto": ({}, False),
    "auto-lr1e-3": ({"learning_rate": 1.0e-3}, False),
    "augmented": ({}, True),
    "augmented-lr1e-3": ({"learning_rate": 1.0e-3}, True),
    "augmented-same-steps": ({}, True),  # max_steps: those `auto` made, filled in main()
}

PAIRS = {"augmented": "auto", "augmented-lr1e-3": "auto-lr1e-3", "augmented-same-steps": "auto"}


def recipe(name: str, out: Path, train: dict[str, Any], augment: dict[str, Any] | None) -> dict:
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
            "max_seq_len": 1024,  # the longest FAQ answer fits whole
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            **train,
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


def trained(run_dir: Path) -> dict[str, Any]:
    lineage = json.loads((run_dir / "lineage.json").read_text())
    sizing = lineage.get("sizing", {})
    return {"steps": lineage["steps"], "epochs": sizing.get("epochs"),
            "batch_size": sizing.get("batch_size"),
            "learning_rate": lineage["hyperparameters"]["learning_rate"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="old-defaults,auto,auto-lr1e-3,augmented",
                        help=f"Comma-separated, from: {', '.join(ARMS)}.")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("/tmp/docs-facts"))
    parser.add_argument("--paraphrase", type=int, default=3, help="Rewordings per heading.")
    parser.add_argument("--questions", type=int, default=2, help="Questions asked per fact.")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of recall per arm.")
    args = parser.parse_args()
    arms = args.arms.split(",")
    if unknown := [a for a in arms if a not in ARMS]:
        parser.error(f"unknown arms {unknown}; choose from {', '.join(ARMS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ASTRA_HOME": str(args.out / "home")}
    augment = {
        "model": "smollm2-135m-instruct",
        "questions_from_docs": True,
        "questions_per_fact": args.questions,
        "paraphrase": args.paraphrase,
        "concurrency": 2,
    }
    seconds: dict[str, float] = {}
    for name in arms:
        train, augmented = ARMS[name]
        if name == "augmented-same-steps":
            train = {"max_steps": trained(args.out / "docs-auto")["steps"]}
        path = args.out / f"{name}.yaml"
        spec = recipe(f"docs-{name}", args.out, train, augment if augmented else None)
        path.write_text(yaml.safe_dump(spec))
        seconds[name] = run(path, env)
    first = args.out / f"docs-{arms[0]}"
    scores = {"base": per_example(first, "against_scores")}
    scores |= {name: per_example(args.out / f"docs-{name}", "scores") for name in arms}
    result: dict[str, Any] = {
        "questions": int(np.sum(~np.isnan(scores["base"]))),
        "seconds": seconds,
        "runs": {name: trained(args.out / f"docs-{name}") for name in arms},
        "recall": {name: bootstrap(values) for name, values in scores.items()},
        "minus_baseline": {name: bootstrap(scores[name] - scores[arms[0]]) for name in arms[1:]},
        # What augmentation adds, against the plain arm trained the same way.
        "augmented_minus_plain": {
            f"{name} - {plain}": bootstrap(scores[name] - scores[plain])
            for name, plain in PAIRS.items()
            if name in scores and plain in scores
        },
    }
    print(f"\nfact recall on {result['questions']} hand-rephrased questions (95% intervals)")
    for name, (value, low, high) in result["recall"].items():
        run_ = result["runs"].get(name, {})
        print(f"  {name:22s} {value:6.1f}  [{low:.1f}, {high:.1f}]  {run_}")
    for name, (value, low, high) in result["minus_baseline"].items():
        print(f"  {name} - {arms[0]}: {value:+.1f}  [{low:+.1f}, {high:+.1f}]")
    for name, (value, low, high) in result["augmented_minus_plain"].items():
        print(f"  {name}: {value:+.1f}  [{low:+.1f}, {high:+.1f}]")
    print(f"  seconds: {seconds}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)


def plot(result: dict[str, Any], path: Path) -> None:
    """Bars of fact recall per arm with their 95% intervals."""
    from astra_tune.plots import new_figure

    names = list(result["recall"])
    values = np.array([result["recall"][n] for n in names])
    figure, axes = new_figure(1.3 * len(names) + 1.5, 3.6)
    errors = [values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]]
    axes.bar(names, values[:, 0], yerr=errors, capsize=4, color="#4c72b0")
    for index, name in enumerate(names):
        steps = result["runs"].get(name, {}).get("steps")
        label = f"{values[index, 0]:.1f}" + (f"\n{steps} steps" if steps else "")
        axes.annotate(label, (index, values[index, 2]), ha="center", va="bottom", fontsize=8)
    axes.set_ylabel("facts stated (%), 95% interval")
    axes.set_title(f"Ollama FAQ: {result['questions']} hand-rephrased questions", fontsize=10)
    axes.tick_params(axis="x", labelrotation=20, labelsize=8)
    axes.set_ylim(0, max(values[:, 2].max() * 1.25, 10))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
