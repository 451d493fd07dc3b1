"""train.max_minutes: the step count and the schedule are fitted to the measured speed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers import get_scheduler

from astra_tune.train import budget
from astra_tune.train.budget import BudgetPlan, TimeBudgetCallback, refit_schedule
from astra_tune.train.run import train_model
from tests.train.test_train import recipe


class TenSecondsPerCall:
    """A clock the budget reads: every reading is 10 s after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 10.0
        return self.now


def scheduler(kind: str, total: int) -> Any:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return get_scheduler(kind, optimizer, num_warmup_steps=2, num_training_steps=total)


def lrs(lr_scheduler: Any, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        lr_scheduler.optimizer.step()
        lr_scheduler.step()
        out.append(lr_scheduler.get_last_lr()[0])
    return out


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_refit_moves_the_horizon_of_the_schedule(kind: str) -> None:
    long, short = scheduler(kind, 100), scheduler(kind, 20)
    lrs(long, 5), lrs(short, 5)
    refit_schedule(long, 20)
    # From the refit on, the long schedule is the short one, down to zero at step 20.
    assert lrs(long, 15) == pytest.approx(lrs(short, 15))
    assert long.get_last_lr()[0] == pytest.approx(0.0, abs=1e-9)


def test_run_stops_within_the_budget_with_the_schedule_decayed(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "time", TenSecondsPerCall())
    # 10 s per step and 2 minutes: 12 of the 40 steps fit (train begin reads the clock once).
    run = recipe(tiny_model_dir, tmp_path / "run", max_steps=40, max_minutes=2.0,
                 scheduler="cosine", eval_steps=4, save_steps=4)  # fmt: skip
    result = train_model(run)
    assert result.global_step == 12
    plan = json.loads((tmp_path / "run" / "time_budget.json").read_text())
    assert plan["max_steps"] == 12
    assert plan["steps_by_epochs"] == 40
    assert plan["seconds_per_step"] == pytest.approx(10.0)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    rows = [json.loads(line) for line in metrics.splitlines()]
    lr = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert max(lr) == 12
    # The schedule decayed to its end instead of stopping at 30% of a 40-step cosine.
    assert lr[12] < 0.05 * 3e-3 < lr[6]
    lineage = json.loads((tmp_path / "run" / "lineage.json").read_text())
    assert lineage["steps"] == 12
    assert lineage["time_budget"]["max_steps"] == 12


def test_resumed_run_keeps_its_plan(tmp_path: Path) -> None:
    plan_file = tmp_path / "time_budget.json"
    plan = BudgetPlan(max_minutes=1.0, max_steps=30, steps_by_epochs=100,
                      seconds_per_step=2.0, fitted_at_step=6)  # fmt: skip
    plan_file.write_text(json.dumps(plan.__dict__))
    lr_scheduler = scheduler("linear", 100)
    lrs(lr_scheduler, 20)
    state = SimpleNamespace(global_step=20, max_steps=100)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    callback = TimeBudgetCallback(0.01, plan_file, resume=True)
    callback.on_train_begin(None, state, control, lr_scheduler=lr_scheduler)
    assert state.max_steps == 30
    for step in range(21, 27):
        state.global_step = step
        callback.on_step_end(None, state, control, lr_scheduler=lr_scheduler)
    # A budget of 0.6 s would stop at once if refitted; the saved plan stands.
    assert state.max_steps == 30
    assert not control.should_training_stop
    assert json.loads(plan_file.read_text())["max_steps"] == 30
