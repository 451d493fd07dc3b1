"""train.epochs / train.batch_size = auto: fit the number of passes and the batch to the data.

A fixed "3 epochs at batch 8" is right for a few thousand examples and wrong at both ends.
A docs folder of 30 answers packs into 6 rows: batch 8 makes that one optimizer step per
pass, so 3 passes (or even 10) are a handful of updates and the model learns the style of
the answers but not their values. A million examples at 3 passes is days of compute that
a single pass does as well. So the batch grows only once there are enough rows for many
updates per pass, passes are added until the run makes enough updates to store facts, and
large sets get fewer passes by OpenAI's rule of thumb (about 25,000 example visits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from astra_tune.recipe import TrainConfig

# Optimizer updates a pass keeps before the batch grows (1024 rows make batch 8).
UPDATES_PER_PASS = 128
LARGEST_AUTO_BATCH = 8
DEFAULT_PASSES = 3
# Updates a run makes at least: memorising facts takes a few hundred updates whatever the
# data size (the quickstart's 155 rows learn half their facts after ~300).
MIN_UPDATES = 200
MAX_PASSES = 40
# Example visits past which passes are cut (OpenAI's fine-tuning default does the same).
MAX_EXAMPLE_VISITS = 25_000


@dataclass(frozen=True)
class Sizing:
    """Passes and batch a run trains with, and where each came from."""

    epochs: float
    batch_size: int
    rows: int
    examples: int
    updates: int
    epochs_auto: bool
    batch_auto: bool
    max_steps: int | None = None  # set: it decides the steps and `epochs` is not used

    def describe(self) -> str:
        """One line for the console: what was picked and why."""
        epochs = f"{self.epochs:g} epochs" + (" (auto)" if self.epochs_auto else "")
        if self.max_steps is not None:
            epochs = f"max_steps {self.max_steps}"
        batch = f"batch {self.batch_size}" + (" (auto)" if self.batch_auto else "")
        return (
            f"{self.examples} examples in {self.rows} rows: {epochs} at {batch}, "
            f"{self.updates} optimizer steps"
        )


def fit_to_data(config: TrainConfig, *, rows: int, examples: int) -> Sizing:
    """Resolve `auto` epochs and batch size for `rows` training rows of `examples` examples."""
    rows = max(rows, 1)
    per_update = config.grad_accum  # rows per update = batch x this (one process today)
    if config.batch_size == "auto":
        batch = max(1, min(LARGEST_AUTO_BATCH, rows // (UPDATES_PER_PASS * per_update)))
    else:
        batch = config.batch_size
    updates_per_pass = math.ceil(rows / (batch * per_update))
    if config.epochs == "auto":
        epochs: float = DEFAULT_PASSES
        if epochs * updates_per_pass < MIN_UPDATES:
            epochs = min(MAX_PASSES, math.ceil(MIN_UPDATES / updates_per_pass))
        elif examples * epochs > MAX_EXAMPLE_VISITS:
            epochs = max(1, MAX_EXAMPLE_VISITS // max(examples, 1))
    else:
        epochs = config.epochs
    updates = config.max_steps or math.ceil(epochs * updates_per_pass)
    return Sizing(
        epochs=epochs,
        batch_size=batch,
        rows=rows,
        examples=examples,
        updates=updates,
        epochs_auto=config.epochs == "auto",
        batch_auto=config.batch_size == "auto",
        max_steps=config.max_steps,
    )
