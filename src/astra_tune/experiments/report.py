"""The scorecard as a self-contained HTML page: the figures, and each arm's thumbs-up rate
over the ratings as they came in, with its always-valid band."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sqlalchemy import select

from astra_tune.atomic import write_text
from astra_tune.experiments.scorecard import Scorecard, scorecard
from astra_tune.experiments.stats import rate_sequence
from astra_tune.experiments.store import Experiment
from astra_tune.experiments.tables import FeedbackRow, ResponseRow
from astra_tune.plots import new_figure, png_img
from astra_tune.registry.index import session


def write_report(engine: Any, experiment: Experiment, path: Path) -> Scorecard:
    """Write the HTML report of `experiment` to `path`; returns the scorecard shown."""
    card = scorecard(engine, experiment)
    with session(engine) as db:
        rated = db.execute(
            select(ResponseRow.arm, FeedbackRow.rating)
            .join(ResponseRow, ResponseRow.id == FeedbackRow.response_id)
            .where(ResponseRow.experiment == experiment.name)
            .order_by(FeedbackRow.created_at)
        ).all()
    series = {arm.name: [r for a, r in rated if a == arm.name] for arm in experiment.arms}
    write_text(path, _page(card, _rate_plot(series, experiment.min_samples)))
    return card


def _rate_plot(series: dict[str, list[int]], tuned_for: int) -> str:
    figure, axes = new_figure(7.5, 3.6)
    for arm, ratings in series.items():
        if not ratings:
            continue
        ups, xs, mids, lows, highs = 0, [], [], [], []
        for n, rating in enumerate(ratings, start=1):
            ups += rating > 0
            interval = rate_sequence(ups, n, tuned_for=tuned_for)
            xs.append(n)
            mids.append(ups / n)
            lows.append(interval.low)
            highs.append(interval.high)
        (line,) = axes.plot(xs, mids, label=f"{arm} ({ups}/{len(ratings)} up)")
        axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.18, linewidth=0)
    axes.set_xlabel("ratings so far")
    axes.set_ylabel("thumbs-up rate")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title("thumbs-up rate with its always-valid 95% band", fontsize=10)
    return png_img(figure)


def _page(card: Scorecard, plot: str) -> str:
    def cell(value: Any) -> str:
        return f"<td>{html.escape(str(value))}</td>"

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    rows = "".join(
        "<tr>" + "".join(cell(v) for v in (
            a.arm, a.version, f"{a.weight:g}%", a.requests, a.units, a.ratings, pct(a.rate),
            f"[{a.rate_interval.low:.1%}, {a.rate_interval.high:.1%}]", pct(a.error_rate),
            "-" if a.p95_latency_s is None else f"{a.p95_latency_s:.2f} s",
            "-" if a.strength is None else f"{a.strength:+.2f}",
        )) + "</tr>"
        for a in card.arms
    )  # fmt: skip
    comparisons = "".join(
        f"<li>{html.escape(c.arm)} − control: "
        f"{'-' if c.difference is None else f'{c.difference:+.1%}'} "
        f"[{c.interval.low:+.1%}, {c.interval.high:+.1%}]</li>"
        for c in card.comparisons
    )
    srm = "-" if card.srm_p is None else f"p = {card.srm_p:.3g}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(card.experiment)} scorecard</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}
.decision{{font-size:1.2em;font-weight:bold}}</style></head><body>
<h1>{html.escape(card.experiment)} on {html.escape(card.model)}</h1>
<p>{html.escape(card.status)}, metric {html.escape(card.metric)}, at least {card.min_samples}
ratings per arm; read at {html.escape(card.at)}.</p>
<p class="decision">decision: {html.escape(card.decision)}</p>
<p>{html.escape(card.reason)}</p>
<table><tr><th>arm</th><th>version</th><th>weight</th><th>requests</th><th>users</th>
<th>ratings</th><th>thumbs up</th><th>95% (always valid)</th><th>errors</th>
<th>p95 latency</th><th>Bradley–Terry</th></tr>{rows}</table>
<ul>{comparisons}</ul>
<p>sample ratio test: {srm} ({card.votes} pairwise votes)</p>
{plot}
</body></html>
"""
