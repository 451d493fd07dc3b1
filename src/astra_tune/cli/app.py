"""The root `astra` command and its error handling."""

from __future__ import annotations

import logging
import sys

import typer

from astra_tune import __version__
from astra_tune.cli import (
    chat,
    data,
    doctor,
    evaluate,
    experiment,
    export,
    models,
    ollama,
    recipe,
    registry,
    rollout,
    run,
    serve,
    train,
)
from astra_tune.cli.output import print_error
from astra_tune.errors import AstraError

app = typer.Typer(
    name="astra",
    help="Astra Tune: fine-tune language models and put them to work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)
app.command("doctor")(doctor.doctor)
app.command("chat")(chat.chat)
app.command("train")(train.train)
app.command("export")(export.export)
app.command("eval")(evaluate.eval_command)
app.command("serve")(serve.serve)
app.command("run")(run.run)
app.command("quickstart")(run.quickstart)
app.command("modelfile")(ollama.modelfile)
app.command("import")(ollama.import_gguf)
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(recipe.app, name="recipe")
app.add_typer(registry.app, name="registry")
app.add_typer(experiment.app, name="experiment")
app.add_typer(rollout.app, name="rollout")
app.add_typer(ollama.push_app, name="push")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"astra-tune {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Astra Tune: fine-tune language models and put them to work."""


def main() -> None:
    """Entry point: run the CLI; user errors print one message and exit 2, bugs keep tracebacks."""
    # peft imports bitsandbytes whenever it is installed (not only for 4-bit), and on CPUs
    # with avx512_bf16 bitsandbytes then warns at import that an optional fused kernel from
    # the hub is missing. 4-bit works without it; `astra doctor` reports QLoRA's real state.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        app()
    except AstraError as exc:
        print_error(exc)
        sys.exit(exc.exit_code)
