"""train.max_minutes: fit the number of steps, and the learning-rate schedule, to a time budget.

The same recipe runs 2.7x faster on a CPU with native bf16 than on an AVX2-only one, so a
fixed epoch count either wastes the fast machine's budget or overruns the slow one's. The
budget is fitted to the measured speed: after a few steps (and again after each
validation, whose cost is then known) the step count is set to what fits in the time
left, capped by `epochs`/`max_steps`, and the schedule's horizon is moved with it so the
learning rate still decays to its end instead of stopping mid-schedule. The plan is saved
in the run directory, so a resumed run keeps it rather than refitting to a new budget.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from astra_tune.atomic import write_text
from astra_tune.errors import ConfigError

# Steps timed before the first fit; the first step (allocations, oneDNN kernel choice) is
# left out of the rate.
PROBE_STEPS = 6


@dataclass
class BudgetPlan:
    """The step count fitted to train.max_minutes, saved as RUN/time_budget.json."""

    max_minutes: float
    max_steps: int
    steps_by_epochs: int
    seconds_per_step: float
    fitted_at_step: int


def read_plan(path: Path) -> BudgetPlan | None:
    """The saved plan of a run, or None when it has none."""
    if not path.is_file():
        return None
    try:
        return BudgetPlan(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a time-budget plan ({exc})",
            where=str(path),
            fix="delete it; the resumed run then fits its steps again",
        ) from exc


def refit_schedule(lr_scheduler: Any, total_steps: int) -> None:
    """Move the horizon of a transformers warmup/decay schedule to `total_steps`."""
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is None:
        raise ConfigError(
            f"train.max_minutes cannot refit a {type(scheduler).__name__} schedule",
            where="train.scheduler",
            fix="use linear, cosine, constant or constant_with_warmup",
        )
    for index, fn in enumerate(lambdas):
        # transformers builds each schedule as a partial over num_training_steps; the
        # constant ones have no horizon and need no change.
        if isinstance(fn, functools.partial) and "num_training_steps" in fn.keywords:
            keywords = {**fn.keywords, "num_training_steps": total_steps}
            lambdas[index] = functools.partial(fn.func, *fn.args, **keywords)


class TimeBudgetCallback(TrainerCallback):
    """Stops training within `max_minutes`, with the schedule fitted to the steps that fit."""

    def __init__(self, max_minutes: float, plan_file: Path, *, resume: bool) -> None:
        self.max_minutes = max_minutes
        self.plan_file = plan_file
        self.plan = read_plan(plan_file) if resume else None
        self._began = 0.0
        self._first_step_end: float | None = None  # timing starts after step one
        self._start_step = 0
        self._steps_by_epochs = 0
        self._refit_due = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._began = time.perf_counter()
        self._start_step = state.global_step
        self._steps_by_epochs = state.max_steps
        if self.plan is not None:
            self._apply(state, kw.get("lr_scheduler"), self.plan.max_steps)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._refit_due = True  # the rate measured so far now includes a validation

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        now = time.perf_counter()
        done = state.global_step - self._start_step
        if done == 1:
            self._first_step_end = now
        resumed_plan = self.plan is not None and self.plan.fitted_at_step < self._start_step
        if resumed_plan or self._first_step_end is None or done < 2:
            return
        if not (done == PROBE_STEPS or self._refit_due):
            return
        self._refit_due = False
        per_step = (now - self._first_step_end) / (done - 1)
        left = self.max_minutes * 60 - (now - self._began)
        fitted = state.global_step + max(0, math.floor(left / per_step))
        total = max(state.global_step, min(self._steps_by_epochs, fitted))
        self.plan = BudgetPlan(
            max_minutes=self.max_minutes,
            max_steps=total,
            steps_by_epochs=self._steps_by_epochs,
            seconds_per_step=round(per_step, 4),
            fitted_at_step=state.global_step,
        )
        write_text(self.plan_file, json.dumps(asdict(self.plan), indent=2) + "\n")
        self._apply(state, kw.get("lr_scheduler"), total)
        if state.global_step >= total:
            control.should_training_stop = True
            control.should_save = True

    def _apply(self, state: Any, lr_scheduler: Any, total: int) -> None:
        state.max_steps = total
        if lr_scheduler is not None:
            refit_schedule(lr_scheduler, total)
