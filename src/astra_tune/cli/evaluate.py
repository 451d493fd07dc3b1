"""`astra eval`: score a model (against another), and human rating sheets."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.table import Table

from astra_tune.cli.output import stdout_console
from astra_tune.errors import ConfigError
from astra_tune.recipe import EvalConfig, describe


def eval_command(
    args: list[str] = typer.Argument(
        None,
        metavar="MODEL | sheet EVAL_DIR | ratings SHEET",
        help="A model (run directory, HF directory, .gguf, catalog name) to evaluate; "
        "`sheet EVAL_DIR` writes a blind human-rating CSV; `ratings SHEET` reads it back.",
    ),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Chat records (JSONL); default for a run: its test split."
    ),
    against: str | None = typer.Option(
        None, "--against", help="Model to compare with (default for a run: its base; 'none')."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output directory."),
    samples: int | None = typer.Option(
        None, "--samples", "-n", help=describe(EvalConfig, "samples")
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help=describe(EvalConfig, "metrics", "Comma-separated.")
    ),
    max_new_tokens: int | None = typer.Option(
        None, "--max-new-tokens", help=describe(EvalConfig, "max_new_tokens")
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="OpenAI-compatible base URL of an LLM judge."
    ),
    judge_model: str | None = typer.Option(None, "--judge-model", help="The judge's model."),
) -> None:
    """Perplexity, ROUGE, BLEU, chrF, exact match and F1, side by side with intervals.

    astra eval RUN_DIR                        the run against its base, on its test split
    astra eval MODEL --data test.jsonl --against OTHER -o DIR
    astra eval sheet DIR [-o sheet.csv]       blind rating sheet from an evaluation
    astra eval ratings sheet.csv              mean human rating per model, with intervals
    """
    args = args or []
    if args[:1] == ["sheet"]:
        _sheet(args[1:], output)
        return
    if args[:1] == ["ratings"]:
        _ratings(args[1:])
        return
    if len(args) != 1:
        raise ConfigError("name one model to evaluate: astra eval MODEL --data FILE")
    _evaluate(args[0], data, against, output, samples, metrics, max_new_tokens, judge_url,
              judge_model)  # fmt: skip


def _evaluate(
    spec: str,
    data: Path | None,
    against: str | None,
    output: Path | None,
    samples: int | None,
    metrics: str | None,
    max_new_tokens: int | None,
    judge_url: str | None,
    judge_model: str | None,
) -> None:
    from astra_tune.evaluate.stage import evaluate_model, plan_evaluation
    from astra_tune.progress import progress_bar
    from astra_tune.recipe import JudgeConfig

    changes: dict[str, object] = {}
    if samples is not None:
        changes["samples"] = samples
    if metrics is not None:
        changes["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    if max_new_tokens is not None:
        changes["max_new_tokens"] = max_new_tokens
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise ConfigError("a judge needs both --judge-url and --judge-model", where="--judge")
        changes["judge"] = JudgeConfig(base_url=judge_url, model=judge_model)
    plan = plan_evaluation(spec, data=data, against=against, out_dir=output, changes=changes)
    with progress_bar() as bar:
        result = evaluate_model(
            plan.spec, plan.data, plan.config, against=plan.against, out_dir=plan.out_dir,
            progress=bar,
        )  # fmt: skip
    stdout_console().print(_table(result))
    if result.judge is not None:
        j = result.judge.to_json()
        stdout_console().print(
            f"LLM judge: win rate {j['win_rate']['value']:.3f} "
            f"[{j['win_rate']['low']:.3f}, {j['win_rate']['high']:.3f}] "
            f"(wins {j['wins']}, ties {j['ties']}, losses {j['losses']}, invalid {j['invalid']})",
            highlight=False,
        )
    stdout_console().print(
        f"[green]evaluated:[/] {len(result.records)} examples in {result.seconds:.0f} s; "
        f"{plan.out_dir / 'report.html'}, scores.json, samples.jsonl",
        highlight=False,
    )


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _table(result: object) -> Table:
    from astra_tune.evaluate.stage import EvalResult

    assert isinstance(result, EvalResult)
    table = Table(title=f"{result.model.spec} on {len(result.records)} examples (95% CI)")
    table.add_column("metric")
    table.add_column("model", justify="right")
    comparisons = {c.metric: c for c in result.comparisons}
    if result.against is not None:
        table.add_column(f"against: {Path(result.against.spec).name}", justify="right")
        table.add_column("difference", justify="right")
        table.add_column("W/T/L", justify="right")
    for name, value in result.model.intervals.items():
        cells = [name, f"{_fmt(value.value)} [{_fmt(value.low)}, {_fmt(value.high)}]"]
        if name in comparisons:
            c = comparisons[name]
            better = (c.difference.value > 0) == c.higher_is_better
            color = ("green" if better else "red") if c.significant else "white"
            d = c.difference
            cells += [
                f"{_fmt(c.against.value)} [{_fmt(c.against.low)}, {_fmt(c.against.high)}]",
                f"[{color}]{d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}][/]",
                f"{c.wins}/{c.ties}/{c.losses}",
            ]
        table.add_row(*cells)
    return table


def _sheet(args: list[str], output: Path | None) -> None:
    from astra_tune.evaluate.ratings import key_path, write_sheet

    if len(args) != 1:
        raise ConfigError("`astra eval sheet` takes one evaluation directory", where="arguments")
    eval_dir = Path(args[0])
    sheet = output or eval_dir / "ratings.csv"
    rows = write_sheet(eval_dir, sheet)
    stdout_console().print(
        f"[green]wrote:[/] {sheet} ({rows} answers to rate 1-5, models hidden and shuffled; "
        f"the key is {key_path(sheet).name})\n  then: astra eval ratings {sheet}",
        highlight=False,
    )


def _ratings(args: list[str]) -> None:
    from astra_tune.evaluate.ratings import read_ratings

    if len(args) != 1:
        raise ConfigError("`astra eval ratings` takes one rated sheet", where="arguments")
    table = Table(title="human ratings (1-5, 95% CI)")
    for column in ("model", "rated", "mean"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for rating in read_ratings(Path(args[0])):
        m = rating.mean
        table.add_row(rating.model, str(rating.count), f"{m.value:.2f} [{m.low:.2f}, {m.high:.2f}]")
    stdout_console().print(table)
