"""report.html for prepared data: the numbers of report.json, with plots to look at first."""

from __future__ import annotations

import html
from typing import Any

from astra_tune.plots import new_figure, png_img


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (plots embedded as PNG) summarizing a prepare run."""
    counts = report["split"]["counts"]
    rows = "".join(
        f"<tr><td>{name}</td><td>{counts[name]}</td>{_token_cells(report['tokens'].get(name))}</tr>"
        for name in ("train", "val", "test")
    )
    drops = (
        "".join(
            f"<tr><td>{html.escape(reason)}</td><td>{count}</td>"
            f"<td>{html.escape(', '.join(report['drop_examples'].get(reason, [])[:3]))}</td></tr>"
            for reason, count in report["drops"].items()
        )
        or "<tr><td colspan=3>nothing dropped</td></tr>"
    )
    clusters = (
        "".join(
            f"<tr><td>{c['kind']}</td><td>{html.escape(c['kept'])}</td>"
            f"<td>{html.escape(', '.join(c['dropped'][:5]))}</td></tr>"
            for c in report["duplicates"]["clusters"][:50]
        )
        or "<tr><td colspan=3>no duplicates</td></tr>"
    )
    sources = "".join(
        f"<tr><td>{html.escape(s['path'])}</td><td>{s['format']}</td><td>{s['records']}</td></tr>"
        for s in report["sources"]
    )
    languages = ", ".join(f"{html.escape(k)}: {v}" for k, v in report["languages"].items())
    contamination = report["contamination"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Astra Tune data report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; font-size: 14px; }}
th {{ background: #f3f3f3; }} img {{ max-width: 100%; }}
.plots {{ display: flex; gap: 1em; flex-wrap: wrap; }}
</style></head><body>
<h1>Prepared data</h1>
<p>{report["read"]} rows read, {report["bad_lines"]} malformed lines skipped,
base model <code>{html.escape(report["base_model"])}</code>, seed {report["seed"]},
stratified by <b>{report["split"]["stratify"]}</b>, {report["seconds"]} s.</p>
<div class="plots">{_plot_lengths(report)}{_plot_drops(report)}</div>
<h2>Splits</h2>
<table><tr><th>split</th><th>records</th><th>tokens p5</th><th>p50</th><th>p95</th>
<th>max</th><th>total</th></tr>{rows}</table>
<h2>Sources</h2>
<table><tr><th>source</th><th>format</th><th>records</th></tr>{sources}</table>
<h2>Dropped</h2>
<table><tr><th>reason</th><th>count</th><th>examples</th></tr>{drops}</table>
<p>Contamination check (threshold {contamination["threshold"]}):
{contamination["removed"]} val/test records removed.
{report.get("repeated", 0)} training records are copies (sources with <code>repeat</code>).</p>
<h2>Duplicate clusters</h2>
<table><tr><th>kind</th><th>kept</th><th>dropped</th></tr>{clusters}</table>
<h2>Languages (answers)</h2><p>{languages}</p>
</body></html>
"""


def _token_cells(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "<td colspan=5>-</td>"
    return "".join(f"<td>{stats[key]}</td>" for key in ("p5", "p50", "p95", "max", "total"))


def _plot_lengths(report: dict[str, Any]) -> str:
    series = {
        name: stats["histogram"]
        for name, stats in report["tokens"].items()
        if stats and stats.get("histogram")
    }
    if not series:
        return ""
    figure, axes = new_figure(6, 3.5)
    axes.hist(list(series.values()), bins=30, label=list(series), stacked=True)
    axes.set_xlabel("tokens per example (rendered with the chat template)")
    axes.set_ylabel("examples")
    axes.set_title("Example length by split")
    axes.legend()
    return png_img(figure)


def _plot_drops(report: dict[str, Any]) -> str:
    drops = report["drops"]
    if not drops:
        return ""
    figure, axes = new_figure(6, 0.5 + 0.45 * len(drops))
    reasons = list(drops)[::-1]
    axes.barh(reasons, [drops[r] for r in reasons], color="#c0504d")
    axes.set_xlabel("records dropped")
    axes.set_title("Why records were dropped")
    return png_img(figure)
