"""`astra doctor`: software, hardware and the recommended training setup."""

from __future__ import annotations

import typer
from rich.table import Table

from astra_tune.cli.output import human_bytes, stdout_console
from astra_tune.doctor import Check, DoctorReport, run_doctor


def doctor() -> None:
    """Check the installation and this machine; recommend the training dtype."""
    console = stdout_console()
    with console.status("inspecting this machine…"):
        report = run_doctor()
    console.print(_software_table(report))
    console.print(_hardware_table(report))
    console.print(_setup_table(report))
    failures = report.failures
    if failures:
        console.print(f"[bold red]{len(failures)} required piece(s) missing:[/]")
        for check in failures:
            console.print(f"  - {check.name}: {check.fix}")
        raise typer.Exit(1)
    console.print("[bold green]ready:[/] everything Astra Tune needs is here.")


def _status(check: Check) -> str:
    if check.ok:
        return "[green]ok[/]"
    return "[red]missing[/]" if check.required else "[yellow]unavailable[/]"


def _software_table(report: DoctorReport) -> Table:
    table = Table(title="Software", title_justify="left")
    table.add_column("component")
    table.add_column("found")
    table.add_column("status")
    checks = [*report.software, report.default_model]
    show_fix = any(check.fix for check in checks)
    if show_fix:
        table.add_column("fix")
    for check in checks:
        row = [check.name, check.found, _status(check)]
        table.add_row(*row, *([check.fix or ""] if show_fix else []))
    return table


def _hardware_table(report: DoctorReport) -> Table:
    hw = report.hardware
    yes_no = {True: "[green]yes[/]", False: "no"}
    table = Table(title="Hardware", title_justify="left")
    table.add_column("item")
    table.add_column("value")
    table.add_row("CPU", hw.cpu_model or "unknown")
    table.add_row("cores", f"{hw.physical_cores} physical, {hw.logical_cores} logical")
    table.add_row("AVX2", yes_no[hw.avx2])
    table.add_row("AVX-512", yes_no[hw.avx512])
    table.add_row("native bf16", yes_no[hw.native_bf16])
    table.add_row(
        "RAM",
        f"{human_bytes(hw.ram_total_bytes)} total, {human_bytes(hw.ram_available_bytes)} free",
    )
    if hw.gpus:
        for gpu in hw.gpus:
            table.add_row(
                f"CUDA GPU {gpu.index}",
                f"{gpu.name}, {human_bytes(gpu.memory_bytes)}, bf16 {'yes' if gpu.bf16 else 'no'}",
            )
    else:
        table.add_row("CUDA", "no")
    table.add_row("MPS (Apple)", yes_no[hw.mps])
    return table


def _setup_table(report: DoctorReport) -> Table:
    table = Table(title="Setup", title_justify="left")
    table.add_column("item")
    table.add_column("value")
    table.add_row("ASTRA_HOME", str(report.home))
    table.add_row("free disk there", human_bytes(report.home_free_bytes))
    table.add_row("training dtype", f"[bold]{report.dtype}[/] — {report.dtype_reason}")
    table.add_row(
        report.qlora.name,
        ("[green]yes[/] " if report.qlora.ok else "[yellow]no[/] ")
        + report.qlora.found
        + (f" — {report.qlora.fix}" if report.qlora.fix else ""),
    )
    return table
