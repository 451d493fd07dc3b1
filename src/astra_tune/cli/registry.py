"""`astra registry`: push model versions, move aliases, inspect, compare, clean up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from astra_tune.cli.output import human_bytes, stdout_console
from astra_tune.errors import AstraError

app = typer.Typer(help="Model registry: versions, aliases, lineage.", no_args_is_help=True)


def _registry() -> Any:
    from astra_tune.registry.store import Registry

    return Registry()


@app.command("push")
def push(
    source: Path = typer.Argument(..., help="Run directory (its export/) or a .gguf file."),
    name: str = typer.Option(..., "--name", "-n", help="Model name, e.g. orrery or team/orrery."),
    version: str | None = typer.Option(
        None, "--version", help="Semantic version X.Y.Z (default: next patch)."
    ),
) -> None:
    """Store a new immutable version (GGUFs, adapter, template, stops, lineage)."""
    from astra_tune.export.versions import request_for
    from astra_tune.progress import progress_bar
    from astra_tune.registry.names import parse_version, validate_name

    validate_name(name)
    if version is not None:
        parse_version(version)
    request = request_for(source, name)
    total = sum(layer.source.stat().st_size for layer in request.layers
                if isinstance(layer.source, Path))  # fmt: skip
    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"storing {name}", total=total, unit="MB")
        pushed = _registry().push(request, version=version, on_bytes=lambda n: bar.advance(task, n))
    if pushed.existing:
        stdout_console().print(
            f"[green]already stored:[/] {pushed.name}:{pushed.version} holds this content; "
            "no new version (pass --version to make one anyway)",
            highlight=False,
        )
        return
    stdout_console().print(
        f"[green]pushed:[/] {pushed.name}:{pushed.version}  "
        f"({human_bytes(pushed.new_bytes)} new, {human_bytes(pushed.reused_bytes)} already "
        f"stored)\n  manifest {pushed.manifest_digest}",
        highlight=False,
    )


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="Only this model.")) -> None:
    """Every version with its aliases, quantizations and size."""
    rows = _registry().list_versions(name)
    table = Table(title="registry")
    for column in ("name", "version", "aliases", "quantizations", "size", "created"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            row["version"],
            ", ".join(row["aliases"]),
            ", ".join(row["summary"].get("quantizations", {})),
            human_bytes(row["size"]),
            row["created_at"],
        )
    empty = "the registry is empty: astra registry push RUN --name NAME"
    stdout_console().print(table if rows else empty)


@app.command("show")
def show(
    reference: str = typer.Argument(..., help="NAME[:VERSION|ALIAS] (default :latest)."),
) -> None:
    """Files, quantizations, lineage (data hashes, hyperparameters) and metrics of a version."""
    from astra_tune.registry.layers import KIND_OF, QUANTIZATION, annotation

    version = _registry().resolve(reference)
    console = stdout_console()
    lineage = version.lineage.get("lineage", {})
    console.print(
        f"[bold]{version.name}:{version.version}[/]  aliases: {', '.join(version.aliases) or '-'}"
        f"  created {version.created_at}\n  manifest {version.manifest_digest}",
        highlight=False,
    )
    files = Table(title="files")
    for column in ("layer", "quantization", "size", "digest"):
        files.add_column(column)
    for layer in version.manifest["layers"]:
        files.add_row(
            KIND_OF.get(layer["mediaType"], layer["mediaType"]),
            annotation(layer, QUANTIZATION) or "",
            human_bytes(layer["size"]),
            layer["digest"][:19] + "…",
        )
    console.print(files)
    summary = version.summary
    facts = Table(title="lineage and metrics", show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    facts.add_row("base model", str(summary.get("base_model")))
    facts.add_row("method", str(summary.get("method") or summary.get("source")))
    for file, digest in (summary.get("data_sha256") or {}).items():
        facts.add_row(f"data {file}", f"sha256:{digest}")
    for key, value in (summary.get("metrics") or {}).items():
        facts.add_row(f"metric {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
    verification = version.lineage.get("verification") or {}
    for check in verification.values():
        if check.get("top1") is not None:
            facts.add_row(f"gguf {check.get('qtype')}", f"top-1 {check['top1']:.1%} vs PyTorch")
    hyper = _hyperparameters(lineage)
    for key in ("method", "epochs", "max_steps", "learning_rate", "batch_size", "max_seq_len"):
        if key in hyper:
            facts.add_row(f"train.{key}", str(hyper[key]))
    if isinstance(hyper.get("lora"), dict) and hyper.get("method") != "full":
        lora = hyper["lora"]
        facts.add_row("train.lora", f"r={lora.get('r')} alpha={lora.get('alpha')}")
    if version.params.get("stop"):
        facts.add_row("stop", " ".join(version.params["stop"]))
    if version.system:
        facts.add_row("system", version.system)
    if version.license:
        facts.add_row("license", version.license)
    if lineage.get("git_commit"):
        facts.add_row("git commit", lineage["git_commit"])
    console.print(facts)
    evaluation = version.lineage.get("evaluation") or {}
    if evaluation.get("model"):
        console.print(_evaluation_table(evaluation))


def _evaluation_table(evaluation: dict) -> Table:
    """The run's evaluation as stored in the version: each metric with its 95% interval,
    and against the base when it was compared."""
    model = evaluation["model"].get("scores") or {}
    against = (evaluation.get("against") or {}).get("scores") or {}
    comparison = evaluation.get("comparison") or {}
    table = Table(title=f"evaluation ({evaluation.get('examples')} held-out examples, 95% CI)")
    table.add_column("metric")
    table.add_column("this version", justify="right")
    if against:
        table.add_column("base", justify="right")
        table.add_column("difference", justify="right")
    for metric, score in model.items():
        row = [metric, _interval(score)]
        if against:
            difference = (comparison.get(metric) or {}).get("difference")
            row += [_interval(against.get(metric)), _interval(difference, signed=True)]
        table.add_row(*row)
    return table


def _interval(score: dict | None, *, signed: bool = False) -> str:
    if not score:
        return "-"
    form = "{:+.3g}" if signed else "{:.3g}"
    return f"{form.format(score['value'])} [{score['low']:.3g}, {score['high']:.3g}]"


@app.command("tag")
def tag(
    source: str = typer.Argument(..., help="NAME:VERSION (or NAME:ALIAS) to point at."),
    alias: str = typer.Argument(..., help="Alias to move: production, staging, champion, ..."),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the history)."),
) -> None:
    """Move an alias to a version; the move is recorded for rollback."""
    previous, current = _registry().tag(source, alias, reason=reason)
    name = source.split(":")[0]
    stdout_console().print(
        f"{name}:{alias} -> {current}" + (f"  (was {previous})" if previous else ""),
        highlight=False,
    )


@app.command("rollback")
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias to move back."),
    reason: str = typer.Option("", "--reason", "-m", help="Why (kept in the history)."),
) -> None:
    """Put an alias back where it pointed before its last move."""
    was, now = _registry().rollback(name, alias, reason=reason)
    stdout_console().print(f"{name}:{alias} -> {now}  (was {was})", highlight=False)


@app.command("history")
def history(
    name: str = typer.Argument(..., help="Model name."),
    alias: str | None = typer.Argument(None, help="Only this alias."),
) -> None:
    """Every alias move: from, to, when, why."""
    table = Table(title=f"{name} alias history")
    for column in ("when", "alias", "from", "to", "reason"):
        table.add_column(column)
    for event in _registry().history(name, alias):
        table.add_row(event["at"], event["tag"], event["from"] or "-", event["to"] or "-",
                      event["reason"])  # fmt: skip
    stdout_console().print(table)


@app.command("diff")
def diff(
    first: str = typer.Argument(..., help="NAME[:TAG]"),
    second: str = typer.Argument(..., help="NAME[:TAG]"),
    all_fields: bool = typer.Option(False, "--all", help="Also show fields that are equal."),
) -> None:
    """Hyperparameters, data hashes, quantizations and metrics of two versions, side by side."""
    registry = _registry()
    a, b = registry.resolve(first, verify=False), registry.resolve(second, verify=False)
    left, right = _comparable(a), _comparable(b)
    table = Table(title=f"{a.reference} vs {b.reference}")
    table.add_column("field")
    table.add_column(a.reference)
    table.add_column(b.reference)
    shown = 0
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key, "-"), right.get(key, "-")
        if x != y or all_fields:
            style = "" if x == y else "yellow"
            table.add_row(key, str(x), str(y), style=style)
            shown += 1
    same = f"{a.reference} and {b.reference} have the same fields"
    stdout_console().print(table if shown else same)


def _comparable(version: Any) -> dict[str, Any]:
    lineage = version.lineage.get("lineage", {})
    flat: dict[str, Any] = {}
    _flatten("train", _hyperparameters(lineage), flat)
    for file, digest in (version.summary.get("data_sha256") or {}).items():
        flat[f"data.{file}"] = digest[:16]
    for key, value in (version.summary.get("metrics") or {}).items():
        flat[f"metric.{key}"] = round(value, 4) if isinstance(value, float) else value
    for quant, size in (version.summary.get("quantizations") or {}).items():
        flat[f"gguf.{quant}"] = human_bytes(size)
    flat["base_model"] = version.summary.get("base_model")
    return flat


def _hyperparameters(lineage: dict[str, Any]) -> dict[str, Any]:
    """The train section a version was trained with, `auto` fields as they were resolved."""
    hyper = dict(lineage.get("hyperparameters") or {})
    sizing = lineage.get("sizing") or {}
    for key in ("epochs", "batch_size"):
        if hyper.get(key) == "auto" and key in sizing:
            hyper[key] = f"{sizing[key]:g} (auto)" if key == "epochs" else f"{sizing[key]} (auto)"
    return hyper


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list) else value


@app.command("rm")
def rm(reference: str = typer.Argument(..., help="NAME:VERSION or NAME:ALIAS.")) -> None:
    """Remove a version (and its aliases) or an alias; unused blobs are collected."""
    removed = _registry().remove(reference)
    stdout_console().print("removed: " + ", ".join(removed), highlight=False)


@app.command("gc")
def gc(
    grace: float = typer.Option(
        3600.0, "--grace", help="Keep unreferenced blobs younger than this (seconds)."
    ),
) -> None:
    """Delete blobs that no version uses."""
    count, freed = _registry().gc(grace_seconds=grace)
    stdout_console().print(f"deleted {count} blobs, {human_bytes(freed)}", highlight=False)


@app.command("verify")
def verify() -> None:
    """Re-hash every blob; list missing or corrupted ones and the versions that need them."""
    problems = _registry().verify()
    console = stdout_console()
    if not problems:
        console.print("[green]every blob matches its digest[/]")
        return
    for problem in problems:
        console.print(
            f"[red]{problem.digest}[/]: {problem.problem}\n"
            f"  needed by {', '.join(problem.versions)}",
            highlight=False,
        )
    raise AstraError(
        f"{len(problems)} damaged blob(s)",
        fix="push the listed versions again from their runs, then `astra registry gc`",
    )


@app.command("export")
def export(
    reference: str = typer.Argument(..., help="NAME[:TAG]"),
    directory: Path = typer.Argument(..., help="Where to write the files and the Modelfile."),
    quant: str | None = typer.Option(None, "--quant", help="Model file the Modelfile uses."),
) -> None:
    """Copy a version's files out, with a Modelfile for `ollama create`."""
    from astra_tune.ollama.files import export_version

    written = export_version(_registry(), reference, directory, quant=quant)
    stdout_console().print("\n".join(str(p) for p in written), highlight=False)
