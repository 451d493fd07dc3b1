"""An experiment's scorecard: per arm traffic, feedback, latency and errors, and a decision.

The decision is deliberately conservative: an invalid split (sample-ratio mismatch) beats
everything, then too little feedback means "keep collecting", and a winner is named only
when an always-valid interval for the difference excludes zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from astra_tune.experiments.stats import (
    SRM_P,
    Interval,
    bradley_terry_intervals,
    difference_sequence,
    quantile,
    rate_sequence,
    sample_ratio_p,
)
from astra_tune.experiments.store import Experiment
from astra_tune.experiments.tables import FeedbackRow, ResponseRow, VoteRow
from astra_tune.registry.index import session


@dataclass(frozen=True)
class ArmCard:
    """One arm's figures."""

    arm: str
    version: str
    weight: float
    requests: int
    units: int
    random_units: int  # requests with no user id, each its own unit
    ratings: int
    ups: int
    rate: float | None
    rate_interval: Interval
    errors: int
    error_rate: float | None
    p50_latency_s: float | None
    p95_latency_s: float | None
    p95_ttft_s: float | None
    strength: float | None = None  # Bradley-Terry, log scale (pairwise votes)
    strength_interval: Interval | None = None


@dataclass(frozen=True)
class Comparison:
    """A candidate against the control: difference in thumbs-up rate, always valid."""

    arm: str
    difference: float | None
    interval: Interval


@dataclass(frozen=True)
class Scorecard:
    experiment: str
    model: str
    status: str
    metric: str
    min_samples: int
    arms: list[ArmCard]
    comparisons: list[Comparison]
    srm_p: float | None
    votes: int
    decision: str
    reason: str
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scorecard(engine: Any, experiment: Experiment) -> Scorecard:
    """The scorecard of `experiment` from the recorded responses, ratings and votes."""
    with session(engine) as db:
        responses = list(
            db.scalars(select(ResponseRow).where(ResponseRow.experiment == experiment.name))
        )
        ratings = dict(
            db.execute(
                select(FeedbackRow.response_id, FeedbackRow.rating)
                .join(ResponseRow, ResponseRow.id == FeedbackRow.response_id)
                .where(ResponseRow.experiment == experiment.name)
            ).all()
        )
        first, second = aliased(ResponseRow), aliased(ResponseRow)
        votes = [
            (a, b, w)
            for a, b, w in db.execute(
                select(first.arm, second.arm, VoteRow.winner)
                .join(first, first.id == VoteRow.first)
                .join(second, second.id == VoteRow.second)
                .where(first.experiment == experiment.name)
            ).all()
        ]
    since = datetime.fromisoformat(experiment.weights_since)
    cards = [
        _arm_card(
            experiment, arm.name, arm.weight, [r for r in responses if r.arm == arm.name], ratings
        )
        for arm in experiment.arms
    ]
    counts = [
        len({r.unit for r in responses if r.arm == arm.name and _utc(r.at) >= since})
        for arm in experiment.arms
    ]
    srm = sample_ratio_p(counts, [arm.weight for arm in experiment.arms])
    names = [arm.name for arm in experiment.arms]
    if votes:
        strengths, intervals = bradley_terry_intervals(names, votes)
        cards = [_with_strength(card, strengths[card.arm], intervals[card.arm]) for card in cards]
    control = next(c for c in cards if c.arm == experiment.control)
    comparisons = [_compare(control, c, experiment.min_samples) for c in cards if c is not control]
    decision, reason = _decide(experiment, cards, comparisons, srm)
    return Scorecard(
        experiment=experiment.name, model=experiment.model, status=experiment.status,
        metric=experiment.metric, min_samples=experiment.min_samples, arms=cards,
        comparisons=comparisons, srm_p=srm, votes=len(votes), decision=decision,
        reason=reason,
    )  # fmt: skip


def _compare(control: ArmCard, arm: ArmCard, tuned_for: int) -> Comparison:
    difference = None
    if arm.rate is not None and control.rate is not None:
        difference = arm.rate - control.rate
    interval = difference_sequence(
        (control.ups, arm.ups), (control.ratings, arm.ratings), tuned_for=tuned_for
    )
    return Comparison(arm=arm.arm, difference=difference, interval=interval)


def _arm_card(
    experiment: Experiment, arm: str, weight: float, rows: list[ResponseRow],
    ratings: dict[str, int],
) -> ArmCard:  # fmt: skip
    rated = [ratings[r.id] for r in rows if r.id in ratings]
    ups = sum(1 for value in rated if value > 0)
    errors = sum(1 for r in rows if r.error)
    latencies = [r.latency_s for r in rows if r.latency_s is not None and not r.error]
    ttfts = [r.ttft_s for r in rows if r.ttft_s is not None]
    versions = sorted({r.version for r in rows}) or [experiment.arm(arm).reference]
    return ArmCard(
        arm=arm, version=", ".join(versions), weight=weight, requests=len(rows),
        units=len({r.unit for r in rows}),
        random_units=sum(1 for r in rows if r.unit_kind == "random"),
        ratings=len(rated), ups=ups, rate=ups / len(rated) if rated else None,
        rate_interval=rate_sequence(ups, len(rated), tuned_for=experiment.min_samples),
        errors=errors, error_rate=errors / len(rows) if rows else None,
        p50_latency_s=quantile(latencies, 0.5), p95_latency_s=quantile(latencies, 0.95),
        p95_ttft_s=quantile(ttfts, 0.95),
    )  # fmt: skip


def _with_strength(card: ArmCard, strength: float, interval: Interval) -> ArmCard:
    values = asdict(card)
    values.update(rate_interval=card.rate_interval, strength=strength,
                  strength_interval=interval)  # fmt: skip
    return ArmCard(**values)


def _decide(
    experiment: Experiment, cards: list[ArmCard], comparisons: list[Comparison],
    srm: float | None,
) -> tuple[str, str]:  # fmt: skip
    if srm is not None and srm < SRM_P:
        why = f"sample ratio mismatch (p = {srm:.2g} < {SRM_P}): the split is not the one "
        return "invalid", why + "asked for; find why before trusting any figure"
    short = [c.arm for c in cards if c.ratings < experiment.min_samples]
    if short:
        return "keep collecting", f"fewer than {experiment.min_samples} ratings on " + (
            ", ".join(short)
        )
    better = [c for c in comparisons if c.interval.low > 0]
    worse = [c for c in comparisons if c.interval.high < 0]
    if better:
        best = max(better, key=lambda c: c.interval.low)
        span = f"[{best.interval.low:+.3f}, {best.interval.high:+.3f}]"
        return f"winner: {best.arm}", f"{best.arm} is ahead of {experiment.control} by {span}"
    if worse and len(worse) == len(comparisons):
        return f"winner: {experiment.control}", "every candidate is behind the control"
    return "no difference yet", "every interval for the difference still includes 0"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=moment.tzinfo or UTC)
