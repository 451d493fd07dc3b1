"""`astra run` and `astra quickstart`: a whole recipe, stage by stage, with a summary."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from astra_tune.atomic import write_text
from astra_tune.cli.output import stdout_console
from astra_tune.pipeline import STAGES, RunResult


def run(
    recipe_path: Path = typer.Argument(..., metavar="RECIPE", help="The recipe YAML file."),
    start: str | None = typer.Option(None, "--from", help=f"First stage: {', '.join(STAGES)}."),
    until: str | None = typer.Option(None, "--until", help="Last stage to run."),
    force: list[str] = typer.Option([], "--force", help="Run this stage even if unchanged."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe field: dotted.key=value (repeatable)."
    ),
) -> None:
    """Prepare data, train, evaluate, export and push, skipping what has not changed."""
    from astra_tune.pipeline import run_pipeline
    from astra_tune.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    started = time.perf_counter()
    result = run_pipeline(recipe, start=start, until=until, force=tuple(force))
    print_summary(result, time.perf_counter() - started)


def print_summary(result: RunResult, seconds: float) -> None:
    """The stage table and the commands to use the model next."""
    table = Table(title=f"astra run: {result.run_dir} ({seconds:.0f} s)")
    for column in ("stage", "status", "time", "figures", "artifacts"):
        table.add_column(column, justify="right" if column == "time" else "left")
    for stage in result.stages:
        status = {"ran": "[green]ran[/]", "skipped": "[dim]unchanged, skipped[/]"}.get(
            stage.status, f"[dim]{stage.status}[/]"
        )
        figures = "\n".join(f"{k}: {v}" for k, v in stage.figures.items()) or stage.note
        artifacts = "\n".join(_short(a, result.run_dir) for a in stage.artifacts[:4])
        if len(stage.artifacts) > 4:
            artifacts += f"\n(+{len(stage.artifacts) - 4} more)"
        time_text = f"{stage.seconds:.0f} s" if stage.status == "ran" else "-"
        table.add_row(stage.name, status, time_text, figures, artifacts)
    console = stdout_console()
    console.print(table)
    if result.reference:
        name = result.reference.split(":")[0]
        console.print(
            f"next:\n  astra serve -m {name}           # OpenAI + Ollama APIs\n"
            f"  astra push ollama {result.reference}   # to an Ollama server\n"
            + (f"  astra chat {result.gguf}\n" if result.gguf else ""),
            highlight=False,
        )


def _print_fact_recall(console: Console, scores_file: Path) -> None:
    """The headline of the evaluation: key facts stated, tuned vs base, with intervals."""
    import json

    if not scores_file.is_file():
        return
    scores = json.loads(scores_file.read_text(encoding="utf-8"))
    facts = (scores.get("comparison") or {}).get("facts")
    if not facts:
        return
    tuned, base, d = facts["model"], facts["against"], facts["difference"]
    console.print(
        f"\n[bold]key facts stated[/] (the reference's numbers and names, on "
        f"{scores['examples']} held-out questions, 95% CI): tuned {tuned['value']:.1f}% "
        f"[{tuned['low']:.1f}, {tuned['high']:.1f}] vs base {base['value']:.1f}% "
        f"[{base['low']:.1f}, {base['high']:.1f}], difference {d['value']:+.1f} "
        f"[{d['low']:+.1f}, {d['high']:+.1f}]",
        highlight=False,
    )


def _short(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return path


def write_quickstart_recipe(directory: Path) -> Path:
    """DIR/recipe.yaml: recipes/cpu-quickstart.yaml with the run next to it (kept if there)."""
    directory.mkdir(parents=True, exist_ok=True)
    recipe_path = directory / "recipe.yaml"
    if not recipe_path.exists():
        template = resources.files("astra_tune.recipes").joinpath("cpu-quickstart.yaml")
        text = template.read_text(encoding="utf-8").replace(
            "\ntrain:\n", "\ntrain:\n  output_dir: run                   # next to this file\n", 1
        )
        write_text(recipe_path, text)
    return recipe_path


def quickstart(
    directory: Path = typer.Argument(
        Path("astra-quickstart"), help="Where the recipe and the run go."
    ),
) -> None:
    """Fine-tune the bundled model on the bundled FAQ, end to end, and ask it a question."""
    import json
    import random

    from astra_tune.chat import GenerationOptions, LlamaCppChat
    from astra_tune.evaluate.facts import check_answer, common_terms
    from astra_tune.pipeline import run_pipeline
    from astra_tune.recipe import load_recipe
    from astra_tune.registry.store import Registry, pick_quantization
    from astra_tune.runs import RunLayout

    recipe_path = write_quickstart_recipe(directory.expanduser().resolve())
    Console(stderr=True).print(
        f"recipe: {recipe_path}  (rerun it with: astra run {recipe_path})", highlight=False
    )
    recipe = load_recipe(recipe_path)
    started = time.perf_counter()
    result = run_pipeline(recipe)
    print_summary(result, time.perf_counter() - started)
    if result.reference is None:
        return
    version = Registry().resolve(result.reference)
    quant = pick_quantization(version, None)
    layout = RunLayout.for_recipe(recipe)
    console = stdout_console()
    _print_fact_recall(console, layout.eval_dir / "scores.json")
    # Any held-out question, drawn with the recipe's seed: never one picked because the
    # model gets it right.
    lines = [line for line in layout.test.read_text(encoding="utf-8").splitlines() if line]
    record = json.loads(random.Random(recipe.seed).choice(lines))
    messages = record["messages"][:-1]
    chat = LlamaCppChat(version.models[quant])
    try:
        options = GenerationOptions(temperature=0.0, max_tokens=64)
        answer = "".join(chat.stream(messages, options)).strip()
    finally:
        chat.close()
    expected = record["messages"][-1]["content"]
    held_out = [json.loads(line)["messages"] for line in lines]
    common = common_terms(
        [m[-1]["content"] for m in held_out], [m[-2]["content"] for m in held_out]
    )
    check = check_answer(answer, expected, messages[-1]["content"], common)
    console.print(
        f"\n[bold]{result.reference}[/] ({quant} GGUF in llama.cpp, a held-out question "
        f"drawn at random):"
    )
    console.print(f"  Q: {messages[-1]['content']}", highlight=False)
    console.print(f"  A: {answer}", highlight=False)
    console.print(f"  expected: {expected}", highlight=False)
    if check.facts:
        console.print(
            f"  key facts (numbers, names) stated: {len(check.found)} of {len(check.facts)} "
            f"({', '.join(check.facts)}; the metric checks nothing else)",
            highlight=False,
        )
