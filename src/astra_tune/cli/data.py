"""`astra data`: prepare raw sources into split records; inspect what training will see."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from astra_tune.cli.output import stdout_console
from astra_tune.errors import ConfigError
from astra_tune.recipe import (
    DataConfig,
    FormatName,
    Recipe,
    SplitConfig,
    describe,
    load_recipe,
    validate_recipe,
)
from astra_tune.templates import RenderedChat

app = typer.Typer(help="Data: prepare sources into train/val/test, inspect the result.",
                  no_args_is_help=True)  # fmt: skip


@app.command("prepare")
def prepare(
    sources: list[str] = typer.Argument(
        None,
        help="Files, directories, builtin:NAME, hub ids or docs URLs to crawl (default: the "
        "recipe's sources).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Directory to write the splits to."),
    recipe: Path | None = typer.Option(None, "--recipe", help="Recipe whose data: section to use."),
    fmt: str | None = typer.Option(None, "--format", help="Force a format instead of detecting."),
    mapping: list[str] = typer.Option(
        None, "--map", help="canonical=column, e.g. --map instruction=question (repeatable)."
    ),
    system_prompt: str | None = typer.Option(
        None, "--system-prompt", help=describe(DataConfig, "system_prompt")
    ),
    skip_bad_lines: bool = typer.Option(
        False, "--skip-bad-lines", help=describe(DataConfig, "skip_bad_lines")
    ),
    val: float | None = typer.Option(None, "--val", help=describe(SplitConfig, "val")),
    test: float | None = typer.Option(None, "--test", help=describe(SplitConfig, "test")),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the split."),
    model: str | None = typer.Option(
        None, "--model", help="Base model whose tokenizer counts tokens."
    ),
) -> None:
    """Read, clean, filter, deduplicate and split data into DIR (train/val/test.jsonl + report)."""
    from astra_tune.data.prepare import prepare_data

    base = load_recipe(recipe) if recipe else None
    data: dict[str, Any] = base.model_dump()["data"] if base else {}
    if sources:
        data["sources"] = list(sources)
    if fmt is not None:
        known = get_args(FormatName)
        if fmt not in known:
            raise ConfigError(
                f"unknown --format {fmt!r}",
                where="--format",
                fix=f"choose one of {', '.join(known)}",
            )
        data["format"] = fmt
    if mapping:
        data["mapping"] = _parse_mapping(mapping)
    if system_prompt is not None:
        data["system_prompt"] = system_prompt
    if skip_bad_lines:
        data["skip_bad_lines"] = True
    split = data.setdefault("split", {})
    if val is not None:
        split["val"] = val
    if test is not None:
        split["test"] = test
    resolved = validate_recipe(
        {
            "name": base.name if base else "data",
            "base_model": model
            or (base.base_model if base else Recipe.model_fields["base_model"].default),
            "seed": seed if seed is not None else (base.seed if base else 42),
            "data": data,
        }
    )
    console = Console(stderr=True)
    result = prepare_data(
        resolved.data, output, base_model=resolved.base_model, seed=resolved.seed, console=console
    )
    _print_prepare_summary(result.report, output)


def _parse_mapping(items: list[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        canonical, sep, column = item.partition("=")
        if not sep or not canonical.strip() or not column.strip():
            raise ConfigError(
                f"--map {item!r} is not canonical=column",
                fix="write it like --map instruction=question",
            )
        parsed[canonical.strip()] = column.strip()
    return parsed


def _print_prepare_summary(report: dict[str, Any], output: Path) -> None:
    console = stdout_console()
    table = Table(title=f"Prepared data in {output}")
    table.add_column("split")
    table.add_column("records", justify="right")
    table.add_column("tokens p50", justify="right")
    table.add_column("tokens p95", justify="right")
    for name, count in report["split"]["counts"].items():
        stats = report["tokens"].get(name) or {}
        table.add_row(name, str(count), str(stats.get("p50", "-")), str(stats.get("p95", "-")))
    console.print(table)
    if report["drops"]:
        drops = Table(title="Dropped")
        drops.add_column("reason")
        drops.add_column("records", justify="right")
        for reason, count in report["drops"].items():
            drops.add_row(reason, str(count))
        console.print(drops)
    console.print(
        f"{report['read']} rows read · {report['bad_lines']} bad lines skipped · "
        f"stratified by {report['split']['stratify']} · report: {output / 'report.html'}",
        highlight=False,
    )


@app.command("inspect")
def inspect(
    target: Path = typer.Argument(..., help="A prepared directory, or one prepared .jsonl file."),
    model: str | None = typer.Option(
        None, "--model", help="Base model whose chat template to use (default: the report's)."
    ),
    examples: int = typer.Option(3, "-n", "--examples", min=0, help="How many examples to show."),
) -> None:
    """Summarize prepared data and show examples exactly as training sees them."""
    import json

    from transformers import AutoTokenizer

    from astra_tune.data.inspect import inspect_data
    from astra_tune.models.resolve import resolve_model

    report = target / "report.json"
    base_model = (
        model
        or (json.loads(report.read_text())["base_model"] if report.is_file() else None)
        or Recipe.model_fields["base_model"].default
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_model).path)
    result = inspect_data(target, tokenizer=tokenizer, base_model=base_model, examples=examples)

    console = stdout_console()
    table = Table(title=f"{target} (rendered with {base_model})")
    for column in ("split", "records", "kinds", "tokens p5", "p50", "p95", "max"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split in result.splits:
        p = split.token_percentiles
        kinds = ", ".join(f"{k} {v}" for k, v in split.kinds.items())
        table.add_row(split.name, str(split.records), kinds,
                      *(str(p.get(key, "-")) for key in ("p5", "p50", "p95", "max")))  # fmt: skip
    console.print(table)
    console.print("languages: " + ", ".join(f"{k} {v}" for k, v in result.languages.items()),
                  highlight=False)  # fmt: skip
    if result.drops:
        console.print("dropped: " + ", ".join(f"{k} {v}" for k, v in result.drops.items()),
                      highlight=False)  # fmt: skip
    for record, rendered in result.examples:
        trained = f"{rendered.trained_count} of {len(rendered.input_ids)} tokens trained"
        title = f"{record.get('source', '')} · {trained}"
        console.print(Panel(highlight_trained(rendered), title=title, title_align="left"))
    if result.examples:
        console.print("[bold green]green[/] = tokens that carry loss; [dim]dim[/] = context only")


def highlight_trained(rendered: RenderedChat) -> Text:
    """The rendered text with loss-carrying tokens in bold green and the rest dimmed."""
    text = Text()
    position = 0
    for (start, end), trained in zip(rendered.offsets, rendered.trained, strict=True):
        if start > position:
            text.append(rendered.text[position:start], style="dim")
        if end > start:
            text.append(rendered.text[start:end], style="bold green" if trained else "dim")
        position = max(position, end)
    text.append(rendered.text[position:], style="dim")
    return text


def _augment_help(name: str) -> str:
    from astra_tune.recipe import AugmentConfig

    return describe(AugmentConfig, name)


@app.command("augment")
def augment(
    prepared: Path = typer.Argument(..., help="Prepared data directory (astra data prepare)."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory for the augmented data."),
    endpoint: str | None = typer.Option(None, "--endpoint", help=_augment_help("endpoint")),
    model: str | None = typer.Option(None, "--model", help=_augment_help("model")),
    paraphrase: int | None = typer.Option(None, "--paraphrase", help=_augment_help("paraphrase")),
    answers: bool | None = typer.Option(
        None, "--answers/--no-answers", help=_augment_help("answers")
    ),
    questions_from_docs: bool | None = typer.Option(
        None,
        "--questions-from-docs/--no-questions-from-docs",
        help=_augment_help("questions_from_docs"),
    ),
    questions_per_fact: int | None = typer.Option(
        None, "--questions-per-fact", help=_augment_help("questions_per_fact")
    ),
    negatives: bool | None = typer.Option(
        None, "--negatives/--no-negatives", help=_augment_help("negatives")
    ),
    concurrency: int | None = typer.Option(
        None, "--concurrency", help=_augment_help("concurrency")
    ),
    max_cost_tokens: int | None = typer.Option(
        None, "--max-cost-tokens", help=_augment_help("max_cost_tokens")
    ),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help=_augment_help("api_key_env")
    ),
    prompts: Path | None = typer.Option(None, "--prompts", help=_augment_help("prompts")),
    show_prompts: bool = typer.Option(
        False, "--show-prompts", help="Print the prompt templates in effect and exit."
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Recipe whose data.augment: (and split checks) to use."
    ),
) -> None:
    """Generate training data through an OpenAI-compatible model: rewordings of each
    question (answers kept verbatim), teacher answers, questions grounded in documents,
    wrong answers for preference tuning. What drops a key term, is not grounded or comes
    close to a val/test question is rejected and counted. Cached: a rerun sends no
    requests, a killed run resumes."""
    from pydantic import ValidationError

    from astra_tune.data.augment import augment_data, load_prompts
    from astra_tune.errors import Problem
    from astra_tune.recipe import AugmentConfig

    base = load_recipe(recipe) if recipe else None
    data_config = base.data if base else DataConfig()
    values: dict[str, Any] = (
        data_config.augment.model_dump() if base and data_config.augment else {}
    )
    flags = {"endpoint": endpoint, "model": model, "paraphrase": paraphrase, "answers": answers,
             "questions_from_docs": questions_from_docs, "negatives": negatives,
             "questions_per_fact": questions_per_fact, "concurrency": concurrency,
             "max_cost_tokens": max_cost_tokens, "api_key_env": api_key_env,
             "prompts": str(prompts) if prompts else None}  # fmt: skip
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        config = AugmentConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            "augmentation settings are incomplete or invalid",
            problems=[
                Problem("--" + str(e["loc"][0]).replace("_", "-"), e["msg"]) for e in exc.errors()
            ],
            fix="e.g. --model smollm2-135m-instruct (served here for the job), or "
            "--endpoint http://127.0.0.1:8000/v1 --model NAME for a running server",
        ) from exc
    if show_prompts:
        for name, template in load_prompts(config).items():
            stdout_console().print(f"[bold]{name}[/]\n{template}\n", highlight=False)
        return
    result = augment_data(config, data_config, prepared, output, console=Console(stderr=True))
    console = stdout_console()
    rejected = ", ".join(f"{reason}: {n}" for reason, n in result.rejected.most_common())
    kept = ", ".join(f"{n} {kind}" for kind, n in result.accepted.items() if n) or "nothing"
    console.print(
        f"[green]augmented:[/] {output}  train {result.counts['train']} "
        f"(kept {kept}), val {result.counts['val']}, test {result.counts['test']}\n"
        f"  requests {result.requests} (cached {result.cached}), tokens {result.tokens}; "
        f"generated {sum(result.generated.values())}, rejected {sum(result.rejected.values())}"
        + (f" ({rejected})" if rejected else ""),
        highlight=False,
    )
    if result.stopped_by_budget:
        console.print(
            "[yellow]stopped:[/] the token budget (--max-cost-tokens) ran out; rerun with a "
            "larger one to continue (replies so far are cached)",
            highlight=False,
        )
