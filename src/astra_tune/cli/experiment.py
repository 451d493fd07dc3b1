"""`astra experiment`: A/B experiments between model versions behind one served name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from astra_tune.cli.output import stdout_console
from astra_tune.errors import ConfigError

app = typer.Typer(help="A/B experiments: arms, traffic split, promotion.", no_args_is_help=True)


def _store() -> Any:
    from astra_tune.experiments.store import ExperimentStore
    from astra_tune.registry.store import Registry

    return ExperimentStore(Registry())


def _split(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError as exc:
        raise ConfigError(
            f"--split must be numbers separated by commas, not {text!r}",
            where="--split",
            fix="e.g. --split 50,50 or --split 90,10",
        ) from exc


def _arms(given: list[str]) -> dict[str, str]:
    arms: dict[str, str] = {}
    for item in given:
        name, sep, reference = item.partition("=")
        if not sep or not name or not reference:
            raise ConfigError(
                f"--arm takes NAME=REFERENCE, not {item!r}",
                where="--arm",
                fix="e.g. --arm control=orrery:1.0.0 --arm candidate=orrery:1.1.0",
            )
        if name in arms:
            raise ConfigError(f"arm {name!r} is given twice", where="--arm")
        arms[name] = reference
    return arms


@app.command("create")
def create(
    name: str | None = typer.Argument(None, help="Experiment name (or `name:` in --config)."),
    model: str | None = typer.Option(None, "--model", help="Served name it takes over."),
    arm: list[str] = typer.Option([], "--arm", help="NAME=REFERENCE; the first is the control."),
    split: str | None = typer.Option(None, "--split", help="Percentages per arm, e.g. 50,50."),
    metric: str | None = typer.Option(None, "--metric", help="thumbs (default) or pairwise."),
    min_samples: int | None = typer.Option(
        None, "--min-samples", help="Feedback per arm before any winner is named (default 100)."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML with the same fields."),
    max_loaded: int | None = typer.Option(
        None, "--max-loaded", help="Models the servers keep loaded (default: serve's default)."
    ),
) -> None:
    """Route a served name to several versions by a sticky hash of each user."""
    from astra_tune.experiments.store import parse_spec
    from astra_tune.serve.settings import load_settings

    values: dict[str, Any] = {}
    if config is not None:
        values.update(_yaml(config))
    flags = {
        "name": name, "model": model, "metric": metric, "min_samples": min_samples,
        "arms": _arms(arm) if arm else None, "split": _split(split) if split else None,
    }  # fmt: skip
    values.update({k: v for k, v in flags.items() if v is not None})
    spec = parse_spec(values, where=str(config) if config else None)
    loaded = max_loaded or load_settings(None, {}).max_loaded
    if len(spec.arms) > loaded:
        raise ConfigError(
            f"{len(spec.arms)} arms, but servers keep {loaded} models loaded",
            where="arms",
            fix=f"run servers with --max-loaded {len(spec.arms)} and pass --max-loaded here",
        )
    experiment = _store().create(spec)
    shares = ", ".join(f"{a.name}={a.reference} {a.weight:g}%" for a in experiment.arms)
    stdout_console().print(
        f"[green]created:[/] {experiment.name} on {experiment.model}: {shares}\n"
        "  running servers pick it up within their registry_poll (2 s by default)",
        highlight=False,
    )


@app.command("list")
def list_() -> None:
    """Every experiment, running ones and stopped ones."""
    experiments = _store().list()
    table = Table(title="experiments")
    for column in ("name", "model", "status", "arms", "created"):
        table.add_column(column)
    for e in experiments:
        arms = ", ".join(f"{a.name}={a.reference} {a.weight:g}%" for a in e.arms)
        table.add_row(e.name, e.model, e.status, arms, e.created_at)
    stdout_console().print(table if experiments else "no experiments: astra experiment create")


@app.command("status")
def status(
    name: str = typer.Argument(..., help="Experiment name."),
    as_json: bool = typer.Option(False, "--json", help="The scorecard as JSON."),
    report: Path | None = typer.Option(
        None, "--html", help="Also write the scorecard with its plot as an HTML page here."
    ),
) -> None:
    """The scorecard: per arm traffic, thumbs-up rate (always-valid 95% interval), latency,
    errors, the sample-ratio test, pairwise ratings, and the decision."""
    import json

    from astra_tune.experiments.scorecard import scorecard

    store = _store()
    experiment = store.get(name)
    if report is not None:
        from astra_tune.experiments.report import write_report

        card = write_report(store.engine, experiment, report)
    else:
        card = scorecard(store.engine, experiment)
    console = stdout_console()
    if as_json:
        console.print_json(json.dumps(card.as_dict()))
        return
    console.print(
        f"[bold]{card.experiment}[/] on {card.model}: {card.status}, metric {card.metric}, "
        f"at least {card.min_samples} ratings per arm",
        highlight=False,
    )
    table = Table()
    for column in ("arm", "version", "weight", "requests", "users", "ratings", "thumbs up",
                   "95% (always valid)", "errors", "p95 latency", "p95 TTFT"):  # fmt: skip
        table.add_column(column)
    for arm in card.arms:
        interval = arm.rate_interval
        table.add_row(
            arm.arm, arm.version, f"{arm.weight:g}%", str(arm.requests),
            f"{arm.units} ({arm.random_units} anonymous)" if arm.random_units else str(arm.units),
            str(arm.ratings), _pct(arm.rate), f"[{interval.low:.1%}, {interval.high:.1%}]",
            _pct(arm.error_rate), _seconds(arm.p95_latency_s), _seconds(arm.p95_ttft_s),
        )  # fmt: skip
    console.print(table)
    for c in card.comparisons:
        diff = "-" if c.difference is None else f"{c.difference:+.1%}"
        console.print(f"{c.arm} - control: {diff}  [{c.interval.low:+.1%}, "
                      f"{c.interval.high:+.1%}]", highlight=False)  # fmt: skip
    if card.votes:
        ranked = sorted(card.arms, key=lambda a: -(a.strength or 0.0))
        console.print(f"pairwise ({card.votes} votes, Bradley-Terry): " + ", ".join(
            f"{a.arm} {a.strength:+.2f}" for a in ranked if a.strength is not None
        ), highlight=False)  # fmt: skip
    srm = "-" if card.srm_p is None else f"p = {card.srm_p:.3g}"
    console.print(f"sample ratio: {srm}", highlight=False)
    console.print(f"[bold]decision: {card.decision}[/] ({card.reason})", highlight=False)
    if report is not None:
        console.print(f"report: {report}", highlight=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


@app.command("weights")
def weights(
    name: str = typer.Argument(..., help="Experiment name."),
    arm: list[str] = typer.Option(..., "--arm", help="NAME=PERCENT, e.g. candidate=50."),
) -> None:
    """Change the traffic split (raising a candidate only moves users out of control)."""
    given: dict[str, float] = {}
    for item in arm:
        key, _, value = item.partition("=")
        try:
            given[key] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--arm takes NAME=PERCENT, not {item!r}", where="--arm") from exc
    experiment = _store().set_weights(name, given)
    shares = ", ".join(f"{a.name} {a.weight:g}%" for a in experiment.arms)
    stdout_console().print(f"[green]weights:[/] {experiment.name}: {shares}", highlight=False)


@app.command("stop")
def stop(
    name: str = typer.Argument(..., help="Experiment name."),
    promote: str | None = typer.Option(
        None, "--promote", help="Arm whose version the served alias then points at."
    ),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the alias history)."),
) -> None:
    """End the experiment; optionally promote an arm (the alias moves, with the reason)."""
    experiment = _store().stop(name, promote=promote, reason=reason)
    done = f"[green]stopped:[/] {experiment.name}"
    if promote:
        result = experiment.result
        done += (f"; {experiment.model} now {result['version']} "
                 f"(was {result.get('previous') or '-'})")  # fmt: skip
    stdout_console().print(done, highlight=False)


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", where=str(path))
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError("an experiment config must be a mapping", where=str(path))
    return loaded


@app.command("export")
def export(
    name: str = typer.Argument(..., help="Experiment name."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for the two files."),
) -> None:
    """Feedback as Open WebUI's JSONL (plus arm and version), and pairwise votes as
    preference records `astra data prepare` reads."""
    from astra_tune.experiments.export import export_feedback

    store = _store()
    done = export_feedback(store.engine, store.get(name), out)
    stdout_console().print(
        f"[green]exported:[/] {done.ratings} ratings and {done.votes} votes -> {done.feedback}\n"
        f"  {done.pairs} preference pairs -> {done.preferences}"
        + (f" ({done.skipped_pairs} votes skipped: ties, both bad, or different prompts)"
           if done.skipped_pairs else ""),
        highlight=False,
    )  # fmt: skip
