"""`astra export`: a model or training run as verified GGUF files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from astra_tune.cli.output import human_bytes, stdout_console
from astra_tune.errors import ConfigError, VerificationError
from astra_tune.recipe import ExportConfig, describe

if TYPE_CHECKING:
    from astra_tune.export.stage import ExportResult


def export(
    spec: str = typer.Argument(
        ..., help="Run directory, adapter or model directory, or catalog name."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        "-q",
        help=describe(ExportConfig, "quant", "Comma-separated (default: the run's recipe)."),
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help=describe(ExportConfig, "output_dir")
    ),
    adapter_only: bool = typer.Option(
        False, "--adapter-only", help=describe(ExportConfig, "adapter_only")
    ),
    no_verify: bool = typer.Option(
        False, "--no-verify", help="Skip: " + describe(ExportConfig, "verify")
    ),
    tokenizer_pre: str | None = typer.Option(
        None, "--tokenizer-pre", help=describe(ExportConfig, "tokenizer_pre")
    ),
) -> None:
    """Merge, convert to GGUF, quantize with llama.cpp, and verify every file against PyTorch."""
    from astra_tune.export.stage import export_model
    from astra_tune.models.gguf_types import parse_types
    from astra_tune.progress import progress_bar

    config = _config(spec)
    changes: dict[str, object] = {}
    if quant is not None:
        try:
            changes["quant"] = parse_types(quant)
        except ConfigError as exc:
            exc.where = "--quant"
            raise
    if output is not None:
        changes["output_dir"] = str(output)
    if adapter_only:
        changes["adapter_only"] = True
    if no_verify:
        changes["verify"] = False
    if tokenizer_pre is not None:
        changes["tokenizer_pre"] = tokenizer_pre
    config = config.model_copy(update=changes)

    with progress_bar() as bar:
        result = export_model(spec, config, progress=bar)
    _print_result(result)


def _print_result(result: ExportResult) -> None:
    """The verification table (or file list), what was dropped, and how to use the files."""
    console = stdout_console()
    if result.reports:
        console.print(_table(result))
        for report in result.reports:
            for warning in report.warnings:
                console.print(f"[yellow]warning:[/] {report.file}: {warning}", highlight=False)
    else:
        for file in result.files:
            console.print(f"{file.path.name}  {human_bytes(file.size_bytes)}", highlight=False)
    for qtype, reasons in result.dropped.items():
        console.print(
            f"[yellow]dropped:[/] {qtype}: {'; '.join(reasons)} - below its targets for this "
            f"model, so not kept (ask for it by name to keep it: --quant f16,{qtype})",
            highlight=False,
        )
    console.print(
        f"[green]exported:[/] {result.out_dir} in {result.seconds:.0f} s"
        + (f"  (verification: {result.verify_path.name})" if result.verify_path else ""),
        highlight=False,
    )
    first = next((f for f in result.files if f.role != "adapter"), None)
    if first is not None:
        lora = f" --lora {result.adapter}" if result.adapter else ""
        console.print(f"  chat with it: astra chat {first.path}{lora}", highlight=False)
    if result.modelfile is not None:
        console.print(f"  for Ollama: ollama create NAME -f {result.modelfile}", highlight=False)
        for note in result.template_notes:
            console.print(f"[yellow]note:[/] Modelfile: {note}", highlight=False)
    if not result.passed:
        failed = [r for r in result.reports if not r.passed]
        raise VerificationError(
            "verification failed for " + ", ".join(r.file for r in failed),
            where=str(result.verify_path),
            fix="; ".join(f"{r.file}: {', '.join(r.failures)}" for r in failed)
            + " - please report this with the model's config.json",
        )


def _config(spec: str) -> ExportConfig:
    """The export: section of the run's own recipe when SPEC is a run, else the defaults."""
    from astra_tune.recipe import run_recipe

    recipe = run_recipe(spec)
    return recipe.export if recipe is not None else ExportConfig()


def _table(result: object) -> Table:
    from astra_tune.export.stage import ExportResult

    assert isinstance(result, ExportResult)
    table = Table(title=f"GGUF files in {result.out_dir}, checked in llama.cpp against PyTorch")
    table.add_column("file")
    for column in ("size", "top-1", "target", "KL", "greedy", "tokens", "tmpl", "stops"):
        table.add_column(column, justify="right")
    table.add_column("reader", justify="right")
    table.add_column("result")
    sizes = {f.path.name: f.size_bytes for f in result.files}
    for r in result.reports:
        verdict = (
            "[red]FAIL[/]" if r.failures else "[yellow]warn[/]" if r.warnings else "[green]ok[/]"
        )
        table.add_row(
            r.file + (f" + {r.adapter}" if r.adapter else ""),
            human_bytes(sizes.get(r.file, r.size_bytes)),
            f"{r.top1:.1%}" if r.top1 is not None else "-",
            f"{r.top1_min:.0%}" if r.top1_min is not None else "-",
            f"{r.kl_mean:.1e}" if r.kl_mean is not None else "-",
            _mark(r.greedy_match),
            r.tokenization or "-",
            _mark(r.template),
            _mark(r.stops_at_eot),
            _mark(r.reader),
            verdict,
        )
    return table


def _mark(value: bool | None) -> str:
    return "-" if value is None else "[green]yes[/]" if value else "[red]no[/]"
