"""The statistics of a scorecard: valid whenever it is read, and honest about small samples.

People look at an experiment while it runs and stop when it looks good; a fixed-sample
95% interval read that way is wrong far more than 5% of the time. The thumbs-up rate's
interval here is a confidence *sequence* (Robbins' normal mixture, as in Howard et al.,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", 2021): it holds at
every sample size at once, so checking it daily is fine. scipy has no confidence
sequences, hence our own, in a few lines.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
SRM_P = 0.001  # below this, the traffic split is not what was asked: the experiment is invalid


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def rate_sequence(ups: int, n: int, *, alpha: float = ALPHA, tuned_for: int = 100) -> Interval:
    """An always-valid interval for a thumbs-up rate after `n` ratings, `ups` of them up.

    Ratings are 1/2-sub-Gaussian (bounded in [0, 1]); the mixture's width is tightest
    near `tuned_for` ratings (the experiment's minimum sample per arm).
    """
    if n == 0:
        return Interval(0.0, 1.0)
    variance = n / 4  # intrinsic time: n ratings of variance at most 1/4
    rho = tuned_for / 4
    radius = math.sqrt((variance + rho) * math.log((variance + rho) / (rho * alpha**2))) / n
    mean = ups / n
    return Interval(max(0.0, mean - radius), min(1.0, mean + radius))


def difference_sequence(
    ups: tuple[int, int], n: tuple[int, int], *, alpha: float = ALPHA, tuned_for: int = 100
) -> Interval:
    """Always-valid interval for rate(second) - rate(first): each arm's sequence at alpha/2
    (both hold together with probability 1 - alpha), differenced."""
    a = rate_sequence(ups[0], n[0], alpha=alpha / 2, tuned_for=tuned_for)
    b = rate_sequence(ups[1], n[1], alpha=alpha / 2, tuned_for=tuned_for)
    return Interval(b.low - a.high, b.high - a.low)


def sample_ratio_p(counts: Sequence[int], weights: Sequence[float]) -> float | None:
    """Chi-square goodness-of-fit p-value of arm counts against the intended weights.

    None when there is nothing to test (no units, or one arm with weight).
    """
    from scipy.stats import chisquare

    total = sum(counts)
    live = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0]
    if total == 0 or len(live) < 2:
        return None
    if sum(c for c, _ in live) != total:
        return 0.0  # units on an arm with no weight: the split is certainly broken
    weight = sum(w for _, w in live)
    expected = [total * w / weight for _, w in live]
    return float(chisquare([c for c, _ in live], expected).pvalue)


def bradley_terry(
    items: Sequence[str], wins: dict[tuple[str, str], float], *, iterations: int = 200
) -> dict[str, float]:
    """Bradley-Terry strengths (log scale, mean 0) from pairwise win counts.

    `wins[(a, b)]` is how often a beat b (a tie counts half to each). Fitted by Hunter's
    MM algorithm on the counts, so the result depends on the votes, never on their order
    (unlike Elo updated in arrival order).
    """
    strength = dict.fromkeys(items, 1.0)
    games: dict[str, dict[str, float]] = {i: {} for i in items}
    won = dict.fromkeys(items, 0.0)
    for (a, b), count in wins.items():
        games[a][b] = games[a].get(b, 0.0) + count
        games[b][a] = games[b].get(a, 0.0) + count
        won[a] += count
    for _ in range(iterations):
        updated = {}
        for i in items:
            denominator = sum(n / (strength[i] + strength[j]) for j, n in games[i].items())
            # One virtual tied game against a fixed opponent of strength 1 keeps undefeated
            # and winless arms finite (and arms in no vote at the reference).
            updated[i] = (won[i] + 0.5) / (denominator + 1.0 / (strength[i] + 1.0))
        strength = updated
    logs = {i: math.log(v) for i, v in strength.items()}
    center = sum(logs.values()) / len(logs) if logs else 0.0
    return {i: v - center for i, v in logs.items()}


def bradley_terry_intervals(
    items: Sequence[str],
    votes: Sequence[tuple[str, str, str]],
    *,
    rounds: int = 200,
    seed: int = 0,
    alpha: float = ALPHA,
) -> tuple[dict[str, float], dict[str, Interval]]:
    """Strengths and bootstrap intervals from votes (first arm, second arm, winner).

    The votes are put in a canonical order before resampling, so the same votes in any
    order give identical ratings and intervals.
    """
    ordered = sorted(votes)
    point = bradley_terry(items, _wins(ordered))
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {i: [] for i in items}
    for _ in range(rounds if ordered else 0):
        drawn = [ordered[rng.randrange(len(ordered))] for _ in ordered]
        for item, value in bradley_terry(items, _wins(drawn), iterations=60).items():
            samples[item].append(value)
    intervals = {}
    for item, values in samples.items():
        values.sort()
        if not values:
            intervals[item] = Interval(-math.inf, math.inf)
            continue
        low = values[int(alpha / 2 * (len(values) - 1))]
        high = values[int((1 - alpha / 2) * (len(values) - 1))]
        intervals[item] = Interval(low, high)
    return point, intervals


def _wins(votes: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str], float]:
    wins: dict[tuple[str, str], float] = {}
    for first, second, winner in votes:
        if first == second or winner == "both_bad":
            continue  # a vote within one arm, or against both, ranks nothing
        if winner == "tie":
            wins[(first, second)] = wins.get((first, second), 0.0) + 0.5
            wins[(second, first)] = wins.get((second, first), 0.0) + 0.5
        else:
            a, b = (first, second) if winner == "a" else (second, first)
            wins[(a, b)] = wins.get((a, b), 0.0) + 1.0
    return wins


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
