"""The export stage: model or run -> GGUF files (+ adapter GGUF) -> verification -> verify.json."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from astra_tune.errors import ConfigError
from astra_tune.export.convert import tensor_count, write_gguf
from astra_tune.export.lora import adapter_settings, write_adapter_gguf
from astra_tune.export.merge import ExportSource, adapter_base_dir, find_source, merged_dir
from astra_tune.export.quantize import quantize
from astra_tune.export.verify import (
    FileReport,
    build_reference,
    check_gguf,
    check_reader,
    stop_record_of,
    write_verify_json,
)
from astra_tune.home import astra_home
from astra_tune.models.gguf_types import DEFAULT_TYPES, DIRECT_TYPES, parse_types
from astra_tune.progress import quiet_hf_progress
from astra_tune.recipe import ExportConfig
from astra_tune.runs import RunLayout


@dataclass(frozen=True)
class ExportedFile:
    """One GGUF written by the export."""

    path: Path
    qtype: str
    role: str  # "model" | "base" | "adapter"

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


@dataclass
class ExportResult:
    """What `export_model` wrote and what verification found."""

    out_dir: Path
    source: ExportSource
    files: list[ExportedFile]
    reports: list[FileReport] = field(default_factory=list)
    verify_path: Path | None = None
    seconds: float = 0.0
    base_dir: Path | None = None  # adapter exports: the HF base the base GGUFs came from
    modelfile: Path | None = None  # for `ollama create -f`
    template_notes: list[str] = field(default_factory=list)  # caveats about its TEMPLATE
    dropped: dict[str, list[str]] = field(default_factory=dict)  # default type -> targets missed

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports)

    @property
    def adapter(self) -> Path | None:
        return next((f.path for f in self.files if f.role == "adapter"), None)


def export_model(
    spec: str,
    config: ExportConfig,
    *,
    progress: Progress | None = None,
) -> ExportResult:
    """Export `spec` (run dir, adapter dir, model dir, catalog name) to GGUF and verify it."""
    started = time.perf_counter()
    types = parse_types(config.quant or list(DEFAULT_TYPES))
    source = find_source(spec)
    if config.adapter_only and source.kind == "model":
        raise ConfigError(
            f"{spec} is a full model, so there is no adapter to export on its own",
            where="export.adapter_only",
            fix="drop --adapter-only, or export a LoRA/QLoRA run",
        )
    if config.adapter_only:
        adapter_settings(source.model_dir)  # refuse DoRA & co. before any work
    out_dir = _out_dir(source, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.glob(".*.tmp-*"):
        _remove_if_abandoned(leftover)
    work = out_dir / f".work.tmp-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    bar = progress or Progress(disable=True)
    metadata = _metadata(source)
    files: list[ExportedFile] = []
    base_dir: Path | None = None
    try:
        if source.kind != "model":
            step = bar.add_task("merging adapter into the base (fp32)", total=None)
            reference_dir = merged_dir(source, work)
            bar.update(step, total=1, completed=1)
        else:
            reference_dir = source.model_dir
        if config.adapter_only:
            base_dir = adapter_base_dir(source, work)
            base_name = f"{source.base_model or base_dir.name}".rsplit("/", 1)[-1].lower()
            files += _write_types(
                base_dir, out_dir, work, base_name, types, "base", metadata, config, bar
            )
            adapter_path = out_dir / f"{source.name}-adapter.gguf"
            step = bar.add_task(f"writing {adapter_path.name}", total=None)
            write_adapter_gguf(source.model_dir, base_dir, adapter_path, metadata=metadata)
            bar.update(step, total=1, completed=1)
            files.append(ExportedFile(adapter_path, "f32", "adapter"))
        else:
            files += _write_types(
                reference_dir, out_dir, work, source.name, types, "model", metadata, config, bar
            )
        result = ExportResult(out_dir=out_dir, source=source, files=files, base_dir=base_dir)
        if config.verify:
            result.reports = _verify(result, reference_dir, config, bar)
            if config.quant is None:
                _drop_below_targets(result)
            result.verify_path = out_dir / "verify.json"
            write_verify_json(
                result.verify_path,
                result.reports,
                {
                    "source": spec,
                    "kind": source.kind,
                    "reference": "PyTorch fp32 on CPU"
                    + (" (adapter merged)" if source.kind != "model" else ""),
                    "positions": config.verify_positions,
                    "dropped": result.dropped,
                },
            )
        result.modelfile, result.template_notes = _modelfile(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _drop_below_targets(result: ExportResult) -> None:
    """Remove the default list's quantized files that miss their quality targets.

    Nobody asked for them by name, and a q4_k_m that answers gibberish where f16 answers
    right (as the 135M default model's does) is worse than no file: serving and the
    registry would pick it first. Files that are wrong (failures) stay, to fail loudly.
    """
    from astra_tune.export.verify import FLOAT_TYPES

    for report in list(result.reports):
        if report.qtype in FLOAT_TYPES or report.failures or not report.warnings:
            continue
        exported = next(f for f in result.files if f.path.name == report.file)
        exported.path.unlink(missing_ok=True)
        result.files.remove(exported)
        result.reports.remove(report)
        result.dropped[report.qtype] = list(report.warnings)


def _modelfile(result: ExportResult) -> tuple[Path, list[str]]:
    """The Modelfile beside the GGUFs: FROM the preferred quantization, ADAPTER, TEMPLATE."""
    from astra_tune.ollama.create import write_modelfile
    from astra_tune.registry.store import PREFERRED

    models = {f.qtype: f.path for f in result.files if f.role in ("model", "base")}
    chosen = next((models[q] for q in PREFERRED if q in models), next(iter(models.values())))
    path, choice = write_modelfile(
        result.out_dir,
        chosen,
        adapter=result.adapter,
        license_text=result.source.license,
        header=f"{result.source.name}, exported by Astra Tune",
    )
    return path, choice.notes


def _write_types(
    model_dir: Path,
    out_dir: Path,
    work: Path,
    name: str,
    types: list[str],
    role: str,
    metadata: dict[str, Any],
    config: ExportConfig,
    bar: Progress,
) -> list[ExportedFile]:
    from transformers import AutoTokenizer

    with quiet_hf_progress():
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    total = tensor_count(model_dir)
    written: dict[str, Path] = {}
    direct = [t for t in types if t in DIRECT_TYPES]
    needs_f16 = any(t not in DIRECT_TYPES for t in types)
    if needs_f16 and "f16" not in direct:
        direct.append("f16-intermediate")
    for qtype in direct:
        kind = "f16" if qtype == "f16-intermediate" else qtype
        path = (
            work / "intermediate-f16.gguf"
            if qtype == "f16-intermediate"
            else out_dir / f"{name}-{qtype}.gguf"
        )
        step = bar.add_task(f"writing {path.name}", total=total, unit="tensor")
        write_gguf(
            model_dir,
            path,
            kind,
            tokenizer=tokenizer,
            metadata=metadata,
            pre_override=config.tokenizer_pre,
            on_tensor=_advance(bar, step),
        )
        written[qtype] = path
    f16 = written.get("f16") or written.get("f16-intermediate")
    for qtype in types:
        if qtype in DIRECT_TYPES:
            continue
        assert f16 is not None
        path = out_dir / f"{name}-{qtype}.gguf"
        step = bar.add_task(f"quantizing {path.name} (llama.cpp)", total=100, unit="%")
        quantize(
            f16, path, qtype, on_progress=lambda share, s=step: bar.update(s, completed=share * 100)
        )
        written[qtype] = path
    return [ExportedFile(written[t], t, role) for t in types]


def _verify(
    result: ExportResult, reference_dir: Path, config: ExportConfig, bar: Progress
) -> list[FileReport]:
    from transformers import AutoTokenizer

    step = bar.add_task("verifying: PyTorch reference", total=None)
    reference = build_reference(
        reference_dir,
        positions=config.verify_positions,
        stop_record=stop_record_of(result.source.run_dir),
    )
    bar.update(step, total=1, completed=1)
    with quiet_hf_progress():
        tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    reports: list[FileReport] = []
    adapter = result.adapter
    for exported in result.files:
        if exported.role == "adapter":
            continue
        label = exported.path.name + (f" + {adapter.name}" if adapter else "")
        step = bar.add_task(f"verifying {label} in llama.cpp", total=None)
        report = check_gguf(exported.path, exported.qtype, reference, tokenizer, adapter=adapter)
        if exported.qtype == "f16":
            bar.update(step, description=f"verifying {exported.path.name}: transformers reader")
            source_dir = result.base_dir if exported.role == "base" else reference_dir
            assert source_dir is not None
            bar.update(step, total=tensor_count(source_dir), completed=0, unit="tensor")
            report.reader, diff = check_reader(exported.path, source_dir, progress=bar, task=step)
            report.reader_max_abs_diff = diff
            if not report.reader:
                report.failures.append(
                    f"transformers reads back different weights (max diff {diff:.3g})"
                )
        bar.update(step, total=1, completed=1)
        reports.append(report)
    return reports


def _advance(bar: Progress, step: Any) -> Callable[[str], None]:
    return lambda _name: bar.advance(step)


def _out_dir(source: ExportSource, config: ExportConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir).expanduser().resolve()
    if source.run_dir is not None:
        return RunLayout.at(source.run_dir).export_dir
    return astra_home() / "exports" / source.name


def _metadata(source: ExportSource) -> dict[str, Any]:
    try:
        version = importlib.metadata.version("astra-tune")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "name": source.name,
        "base_model": source.base_model,
        "license": source.license,
        "finetune": source.name if source.run_dir is not None else None,
        "astra_version": version,
    }


def _remove_if_abandoned(path: Path) -> None:
    import psutil

    pid = path.name.rsplit("-", 1)[-1]
    if pid.isdigit() and not psutil.pid_exists(int(pid)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
