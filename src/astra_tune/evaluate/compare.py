"""Two models on the same examples: differences with paired bootstrap intervals, win/tie/loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from astra_tune.evaluate.metrics import MetricColumn


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Comparison:
    """One metric, model minus the one it is compared against."""

    metric: str
    model: Interval
    against: Interval
    difference: Interval
    wins: int  # examples where the model is better
    ties: int
    losses: int
    higher_is_better: bool

    @property
    def significant(self) -> bool:
        """True when the interval of the difference excludes zero."""
        return self.difference.low > 0 or self.difference.high < 0

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model.to_json(),
            "against": self.against.to_json(),
            "difference": self.difference.to_json(),
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "higher_is_better": self.higher_is_better,
            "significant": self.significant,
        }


def resamples(count: int, rounds: int, seed: int) -> np.ndarray:
    """Row indices for `rounds` bootstrap resamples of `count` examples (paired: shared)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, count, size=(rounds, count))


def interval(column: MetricColumn, rows: np.ndarray) -> Interval:
    """The column's score with the 2.5th-97.5th percentile of its bootstrap scores."""
    scores = np.array([column.score(r) for r in rows])
    return Interval(column.score(), *_percentiles(scores))


def compare(
    model: MetricColumn, against: MetricColumn, rows: np.ndarray, tie: float = 1e-9
) -> Comparison:
    """Paired bootstrap of `model - against` on the same resampled examples."""
    differences = np.array([model.score(r) - against.score(r) for r in rows])
    mine, theirs = model.per_example(), against.per_example()
    sign = 1 if model.higher_is_better else -1
    delta = [sign * (a - b) for a, b in zip(mine, theirs, strict=True)]
    return Comparison(
        metric=model.name,
        model=interval(model, rows),
        against=interval(against, rows),
        difference=Interval(model.score() - against.score(), *_percentiles(differences)),
        wins=sum(d > tie for d in delta),
        ties=sum(abs(d) <= tie for d in delta),
        losses=sum(d < -tie for d in delta),
        higher_is_better=model.higher_is_better,
    )


def mean_interval(values: np.ndarray, rounds: int = 2000, seed: int = 0) -> Interval:
    """The mean of `values` with a 95% bootstrap interval (nan when there are none)."""
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(rounds, values.size))].mean(axis=1)
    return Interval(float(values.mean()), *_percentiles(means))


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)
