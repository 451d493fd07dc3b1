"""scores.json, samples.jsonl and report.html (bar chart with 95% intervals, changed examples)."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from astra_tune.atomic import write_text
from astra_tune.evaluate.metrics import OVERLAP
from astra_tune.plots import new_figure, png_img

if TYPE_CHECKING:
    from astra_tune.evaluate.stage import EvalResult

CHANGED_SHOWN = 10


def write_outputs(result: EvalResult) -> None:
    """Write the three outputs into result.out_dir (each atomically)."""
    result.out_dir.mkdir(parents=True, exist_ok=True)
    write_text(result.out_dir / "scores.json", json.dumps(result.scores(), indent=2) + "\n")
    write_text(
        result.out_dir / "samples.jsonl",
        "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples(result)),
    )
    write_text(result.out_dir / "report.html", render_html(result))


def samples(result: EvalResult) -> list[dict[str, Any]]:
    """Per example: the prompt, the reference, each model's answer and scores."""
    per_model = {"model": _per_example(result.model)}
    if result.against is not None:
        per_model["against"] = _per_example(result.against)
    rows = []
    for index, record in enumerate(result.records):
        row: dict[str, Any] = {
            "index": index,
            "prompt": record[:-1],
            "reference": record[-1]["content"],
            "answer": _answer(result.model.answers, index),
            "scores": {k: v[index] for k, v in per_model["model"].items()},
        }
        if result.against is not None:
            row["against_answer"] = _answer(result.against.answers, index)
            row["against_scores"] = {k: v[index] for k, v in per_model["against"].items()}
        rows.append(row)
    return rows


def _answer(answers: list[str], index: int) -> str | None:
    return answers[index] if answers else None


def _per_example(scores: Any) -> dict[str, list[float]]:
    return {name: column.per_example() for name, column in scores.columns.items()}


def render_html(result: EvalResult) -> str:
    title = f"Evaluation: {html.escape(result.model.spec)}"
    if result.against is not None:
        title += f" vs {html.escape(result.against.spec)}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{title}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top;text-align:left}.num{text-align:right}"
        ".up{color:#0a7d28}.down{color:#b3261e}</style></head><body>",
        f"<h1>{title}</h1>",
        f"<p>{len(result.records)} examples; intervals are 95% paired bootstrap "
        f"percentiles. {html.escape(result.model.description)}"
        + (f"; against {html.escape(result.against.description)}" if result.against else "")
        + "</p>",
        _plot(result),
        _score_table(result),
    ]
    if result.judge is not None:
        parts.append(_judge_section(result.judge))
    parts.append(_changed_table(result))
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _score_table(result: EvalResult) -> str:
    header = "<tr><th>metric</th><th>model</th>"
    if result.against is not None:
        header += "<th>against</th><th>difference</th><th>win / tie / loss</th>"
    rows = [f"<table>{header}</tr>"]
    comparisons = {c.metric: c for c in result.comparisons}
    for name, value in result.model.intervals.items():
        cells = f"<td>{name}</td><td class=num>{_fmt(value.value)} [{_fmt(value.low)}, " \
                f"{_fmt(value.high)}]</td>"  # fmt: skip
        if name in comparisons:
            c = comparisons[name]
            better = (c.difference.value > 0) == c.higher_is_better
            mark = ("up" if better else "down") if c.significant else ""
            cells += (
                f"<td class=num>{_fmt(c.against.value)} [{_fmt(c.against.low)}, "
                f"{_fmt(c.against.high)}]</td><td class='num {mark}'>{c.difference.value:+.3f} "
                f"[{c.difference.low:+.3f}, {c.difference.high:+.3f}]</td>"
                f"<td class=num>{c.wins} / {c.ties} / {c.losses}</td>"
            )
        rows.append(f"<tr>{cells}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _plot(result: EvalResult) -> str:
    names = [n for n in result.model.intervals if n in OVERLAP]
    likelihood = [n for n in result.model.intervals if n not in OVERLAP]
    if not names and not likelihood:
        return ""
    panels = [p for p in (names, likelihood) if p]
    widths = [max(len(p), 1) for p in panels]
    figure, _ = new_figure(2.0 + 1.3 * sum(widths), 4.0)
    figure.clf()
    grid = figure.add_gridspec(1, len(panels), width_ratios=widths)
    models = [("model", result.model)] + ([("against", result.against)] if result.against else [])
    for column, metrics in enumerate(panels):
        axis = figure.add_subplot(grid[0, column])
        width = 0.8 / len(models)
        for offset, (label, scores) in enumerate(models):
            assert scores is not None
            values = [scores.intervals[m] for m in metrics]
            centers = [i + (offset - (len(models) - 1) / 2) * width for i in range(len(metrics))]
            errors = [[v.value - v.low for v in values], [v.high - v.value for v in values]]
            axis.bar(centers, [v.value for v in values], width, yerr=errors, capsize=3,
                     label=f"{label}: {scores.spec.rsplit('/', 1)[-1]}")  # fmt: skip
        axis.set_xticks(range(len(metrics)), metrics, rotation=30)
        axis.set_ylabel("score (0-100)" if metrics is names else "lower is better")
        if column == 0:
            axis.legend(fontsize=8)
    figure.tight_layout()
    return png_img(figure)


def _judge_section(judge: Any) -> str:
    data = judge.to_json()
    return (
        f"<h2>LLM judge ({html.escape(data['judge'])})</h2><p>model wins "
        f"{data['wins']}, ties {data['ties']}, losses {data['losses']}, invalid "
        f"{data['invalid']} over {data['examples']} examples judged in both orders; win rate "
        f"{data['win_rate']['value']:.3f} [{data['win_rate']['low']:.3f}, "
        f"{data['win_rate']['high']:.3f}]; position agreement {data['consistent']:.3f}</p>"
    )


def _changed_table(result: EvalResult) -> str:
    if result.against is None or not result.model.answers:
        return ""
    metric = (
        "rougeL"
        if "rougeL" in result.model.columns
        else next((n for n in result.model.columns if n in OVERLAP), None)
    )
    if metric is None:
        return ""
    mine = result.model.columns[metric].per_example()
    theirs = result.against.columns[metric].per_example()
    order = sorted(range(len(mine)), key=lambda i: abs(mine[i] - theirs[i]), reverse=True)
    rows = [
        f"<h2>Examples that changed most ({metric})</h2><table><tr><th>prompt</th>"
        "<th>reference</th><th>model</th><th>against</th><th>change</th></tr>"
    ]
    for i in order[:CHANGED_SHOWN]:
        record = result.records[i]
        change = mine[i] - theirs[i]
        rows.append(
            f"<tr><td>{html.escape(record[-2]['content'])}</td>"
            f"<td>{html.escape(record[-1]['content'])}</td>"
            f"<td>{html.escape(result.model.answers[i])}</td>"
            f"<td>{html.escape(result.against.answers[i])}</td>"
            f"<td class='num {'up' if change > 0 else 'down'}'>{change:+.1f}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)
