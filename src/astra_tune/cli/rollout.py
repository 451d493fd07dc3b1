"""`astra rollout`: canary rollouts of a new version behind an alias, with guardrails."""

from __future__ import annotations

import re
from typing import Any

import typer
from rich.table import Table

from astra_tune.cli.output import stdout_console
from astra_tune.errors import ConfigError

app = typer.Typer(
    help="Canary and blue-green rollouts: steps or a smoke-tested switch, guardrails, rollback.",
    no_args_is_help=True,
)


def _store() -> Any:
    from astra_tune.experiments.rollout import RolloutStore
    from astra_tune.registry.store import Registry

    return RolloutStore(Registry())


def _seconds(text: str, flag: str = "--interval") -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if match is None:
        raise ConfigError(f"{flag} takes a duration like 60s, 5m or 1h, not {text!r}",
                          where=flag)  # fmt: skip
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return float(match.group(1)) * scale


@app.command("start")
def start(
    model: str = typer.Argument(..., help="Served alias to move, e.g. orrery:production."),
    to: str = typer.Option(..., "--to", help="Candidate version, e.g. orrery:1.1.0."),
    steps: str | None = typer.Option(
        None, "--steps", help="Candidate share per step, % (canary; default 10,25,50,100)."
    ),
    interval: str = typer.Option(
        "60s", "--interval", help="How long each step (blue-green: the post-switch window) runs."
    ),
    failure_limit: int = typer.Option(2, "--failure-limit", help="Failed checks before rollback."),
    max_error_rate: float = typer.Option(0.02, "--max-error-rate"),
    max_p95_latency_ratio: float = typer.Option(1.5, "--max-p95-latency-ratio"),
    max_ttft_ratio: float = typer.Option(1.5, "--max-ttft-ratio"),
    min_requests: int = typer.Option(
        20, "--min-requests", help="Candidate answers a check needs; fewer means hold."
    ),
    blue_green: bool = typer.Option(
        False, "--blue-green", help="Smoke-test the candidate, then switch all traffic at once."
    ),
    scale_down_delay: str = typer.Option(
        "10m", "--scale-down-delay", help="Blue-green: how long the old side stays loaded."
    ),
    smoke_prompt: str = typer.Option(
        "Say hello in one short sentence.",
        "--smoke-prompt",
        help="Blue-green: the question the candidate must answer before the switch.",
    ),
    smoke_max_tokens: int = typer.Option(
        256, "--smoke-max-tokens", help="Blue-green: tokens the smoke answer may take."
    ),
) -> None:
    """Shift traffic to the candidate step by step (or, --blue-green, at once after a smoke
    test); roll back when guardrails fail."""
    from pydantic import ValidationError

    from astra_tune.errors import Problem
    from astra_tune.experiments.rollout import RolloutSpec

    fields: dict[str, Any] = {}
    if steps is not None and blue_green:
        raise ConfigError(
            "a blue-green rollout switches at once: leave out steps", where="--steps",
            fix="drop --steps, or drop --blue-green for a canary",
        )  # fmt: skip
    if steps is not None:
        try:
            fields["steps"] = [float(s) for s in steps.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--steps takes percentages like 10,25,50,100, not {steps!r}",
                              where="--steps") from exc  # fmt: skip
    try:
        spec = RolloutSpec(
            model=model, to=to, interval_s=_seconds(interval), failure_limit=failure_limit,
            max_error_rate=max_error_rate, max_p95_latency_ratio=max_p95_latency_ratio,
            max_ttft_ratio=max_ttft_ratio, min_requests=min_requests,
            strategy="blue-green" if blue_green else "canary",
            scale_down_delay_s=_seconds(scale_down_delay, "--scale-down-delay"),
            smoke_prompt=smoke_prompt, smoke_max_tokens=smoke_max_tokens, **fields,
        )  # fmt: skip
    except ValidationError as exc:
        problems = [
            Problem(path="--" + str(e["loc"][0]).replace("_", "-") if e["loc"] else "rollout",
                    message=e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]  # fmt: skip
        raise ConfigError("invalid rollout", problems=problems) from exc
    rollout = _store().start(spec)
    if rollout.strategy == "blue-green":
        stdout_console().print(
            f"[green]started:[/] {rollout.name}: {rollout.model} {rollout.stable} -> "
            f"{rollout.candidate}, blue-green\n  running servers load the candidate and "
            f"smoke-test it, then switch at once; guardrails for {rollout.interval_s:g} s "
            f"after; see `astra rollout status {rollout.name}`",
            highlight=False,
        )
        return
    plan = ", ".join(f"{s:g}" for s in rollout.steps)
    stdout_console().print(
        f"[green]started:[/] {rollout.name}: {rollout.model} {rollout.stable} -> "
        f"{rollout.candidate}, {rollout.weight:g}% now, steps {plan} every "
        f"{rollout.interval_s:g} s\n  running servers route it and check it; "
        f"see `astra rollout status {rollout.name}`",
        highlight=False,
    )


@app.command("status")
def status(name: str | None = typer.Argument(None, help="Rollout name (default: all).")) -> None:
    """Where each rollout is: step, weight, failures, and every check so far."""
    store = _store()
    console = stdout_console()
    rollouts = [store.get(name)] if name else store.list()
    if not rollouts:
        console.print("no rollouts: astra rollout start ALIAS --to VERSION")
        return
    for r in rollouts:
        where = (
            f"step {r.step + 1} of {len(r.steps)}" if r.strategy == "canary"
            else "blue-green, " + ("switched" if r.switched_at else "not switched")
        )  # fmt: skip
        console.print(
            f"[bold]{r.name}[/]: {r.model} {r.stable} -> {r.candidate}: {r.status}, "
            f"candidate {r.weight:g}% ({where}), "
            f"failed checks {r.failures}/{r.failure_limit}",
            highlight=False,
        )
        table = Table()
        for column in ("at", "event", "weight", "reason"):
            table.add_column(column)
        for event in r.history:
            weight = event.get("weight")
            table.add_row(event["at"], event["event"], "" if weight is None else f"{weight:g}%",
                          event.get("reason") or "")  # fmt: skip
        console.print(table)


@app.command("pause")
def pause(name: str = typer.Argument(...)) -> None:
    """Hold the rollout at its current weight (no checks, no steps)."""
    r = _store().pause(name)
    stdout_console().print(f"paused: {r.name} at {r.weight:g}%", highlight=False)


@app.command("resume")
def resume(name: str = typer.Argument(...)) -> None:
    """Continue a paused rollout; its current step's window starts again."""
    r = _store().resume(name)
    stdout_console().print(f"resumed: {r.name} at {r.weight:g}%", highlight=False)


@app.command("abort")
def abort(
    name: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the history)."),
) -> None:
    """Send every request back to the stable version and end the rollout."""
    r = _store().abort(name, reason)
    moved = " (alias moved back)" if r.switched_at else ""
    stdout_console().print(f"aborted: {r.name}; {r.model} serves {r.stable} only{moved}",
                           highlight=False)  # fmt: skip
