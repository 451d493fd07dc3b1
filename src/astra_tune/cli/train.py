"""`astra train`: fine-tune from a recipe."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from astra_tune.cli.output import stdout_console
from astra_tune.recipe import TrainConfig, describe, load_recipe


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    overrides: list[str] = typer.Option(
        None, "--set", help="Override a recipe field: --set train.learning_rate=1e-4 (repeatable)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
    truncate_ok: bool = typer.Option(
        False, "--truncate-ok", help=describe(TrainConfig, "truncate_ok")
    ),
) -> None:
    """Fine-tune the recipe's base model (LoRA, QLoRA or full) on its prepared data."""
    from astra_tune.train.run import train_model

    extra = ["train.truncate_ok=true"] if truncate_ok else []
    loaded = load_recipe(recipe, [*(overrides or []), *extra])
    result = train_model(loaded, resume=resume, console=Console(stderr=True))
    console = stdout_console()
    console.print(
        f"[green]trained:[/] {result.output_dir}\n"
        f"  method {loaded.train.method}, dtype {result.dtype}, {result.global_step} steps "
        f"({result.epochs:g} epochs at batch {result.batch_size}), "
        f"{result.train_examples} examples, trainable {result.trainable_parameters:,} of "
        f"{result.total_parameters:,} parameters\n"
        f"  final train loss {result.final_train_loss}, val loss {result.final_val_loss}\n"
        f"  chat with it: astra chat {result.run_dir}",
        highlight=False,
    )
