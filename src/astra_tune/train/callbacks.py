"""Trainer callbacks: a rich progress bar, metrics.jsonl, and the loss plot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID
from transformers import TrainerCallback

from astra_tune.progress import progress_bar


class MetricsCallback(TrainerCallback):
    """Append every log (train and eval) to metrics.jsonl, with tokens/s added.

    On resume, lines past the checkpoint's step are dropped first so the file describes
    one continuous run.
    """

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        # Set by the trainer setup when rows are packed: TRL's num_tokens assumes one
        # flattened row per batch and undercounts separate packed rows.
        self.token_counter: Any = None
        self._last: tuple[float, float] | None = None  # (time, num_tokens)
        if resume_step and path.is_file():
            kept = [
                line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]  # fmt: skip
            path.write_text("".join(line + "\n" for line in kept))
        elif not resume_step:
            path.write_text("")
        self.latest: dict[str, Any] = {}

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not logs:
            return
        entry: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0, 4)}
        for key in ("loss", "learning_rate", "grad_norm", "eval_loss", "num_tokens", "train_loss"):
            if key in logs:
                entry[{"learning_rate": "lr", "eval_loss": "val_loss"}.get(key, key)] = float(
                    logs[key]
                )
        now = time.perf_counter()
        if self.token_counter is not None and "loss" in logs:
            logs = {**logs, "num_tokens": self.token_counter()}
            entry["num_tokens"] = float(logs["num_tokens"])
        if "num_tokens" in logs and "loss" in logs:
            if self._last is not None and now > self._last[0]:
                entry["tokens_per_s"] = round(
                    (logs["num_tokens"] - self._last[1]) / (now - self._last[0]), 1
                )
            self._last = (now, float(logs["num_tokens"]))
        self.latest.update(entry)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


class RichProgressCallback(TrainerCallback):
    """A rich bar with loss, tokens/s and ETA, replacing transformers' tqdm bar."""

    def __init__(self, metrics: MetricsCallback) -> None:
        self.metrics = metrics
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.progress = progress_bar()
        self.progress.start()
        self.task = self.progress.add_task(
            "training", total=state.max_steps, completed=state.global_step, unit="step"
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is None or self.task is None:
            return
        latest = self.metrics.latest
        parts = [f"training · loss {latest['loss']:.3f}" if "loss" in latest else "training"]
        if "tokens_per_s" in latest:
            parts.append(f"{latest['tokens_per_s']:.0f} tok/s")
        if "val_loss" in latest:
            parts.append(f"val {latest['val_loss']:.3f}")
        # total follows state.max_steps, which train.max_minutes may refit mid-run
        self.progress.update(self.task, completed=state.global_step, total=state.max_steps,
                             description=" · ".join(parts))  # fmt: skip

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def plot_losses(metrics_path: Path, out: Path) -> None:
    """loss.png: training loss per step, validation loss where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    figure, axes = plt.subplots(figsize=(7, 4))
    if train:
        axes.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        axes.plot(*zip(*val, strict=True), "o-", label="val loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Training and validation loss")
    axes.legend()
    figure.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(figure)
