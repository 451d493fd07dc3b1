"""`astra run`: data -> train -> eval -> export -> push, each stage skipped when unchanged.

A stage's fingerprint hashes its recipe section and the *content* of what it reads: the
source files, or the previous stage's outputs. A rerun skips a stage whose fingerprint
matches the last completed one and whose outputs are still there; a forced stage that
produces the same bytes leaves the later stages skipped, since they hash what it wrote.
State lives in RUN/pipeline.json, written atomically after every stage, so an
interrupted run picks up at the stage it was in (training from its last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from astra_tune.atomic import write_text
from astra_tune.errors import ConfigError
from astra_tune.recipe import Recipe
from astra_tune.runs import RunLayout, run_lock

STAGES = ("data", "augment", "train", "eval", "export", "push")


@dataclass
class StageReport:
    """What one stage did in this invocation."""

    name: str
    status: str  # "ran" | "skipped" | "not run" | "nothing to do"
    seconds: float = 0.0
    artifacts: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class RunResult:
    """Every stage's report, and the registry version at the end (if pushed)."""

    run_dir: Path
    stages: list[StageReport]
    reference: str | None = None  # registry name:version
    gguf: Path | None = None


class _State:
    """RUN/pipeline.json: completed stages and a cache of file hashes by size and mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"stages": {}, "hashes": {}}
        if path.is_file():
            self.data = json.loads(path.read_text(encoding="utf-8"))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def file_hash(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        cached = self.data["hashes"].get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return str(cached[2])
        from astra_tune.digests import file_sha256

        digest = file_sha256(path)
        self.data["hashes"][key] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def tree_hash(self, *paths: Path) -> str:
        """Content hash of files and directories (names relative to each root)."""
        digest = hashlib.sha256()
        for root in paths:
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                name = file.name if root.is_file() else str(file.relative_to(root))
                digest.update(f"{name}\0{self.file_hash(file)}\n".encode())
        return digest.hexdigest()


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def run_pipeline(
    recipe: Recipe,
    *,
    start: str | None = None,
    until: str | None = None,
    force: tuple[str, ...] = (),
    console: Console | None = None,
) -> RunResult:
    """Run the recipe's stages in order, skipping those whose inputs are unchanged."""
    for name in (start, until, *force):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}", fix=f"stages: {', '.join(STAGES)}")
    first = STAGES.index(start) if start else 0
    last = STAGES.index(until) if until else len(STAGES) - 1
    layout = RunLayout.for_recipe(recipe)
    with run_lock(layout.root):
        return _run_stages(recipe, layout, first, last, force, console or Console(stderr=True))


def _run_stages(
    recipe: Recipe, layout: RunLayout, first: int, last: int, force: tuple[str, ...], out: Console
) -> RunResult:
    run_dir = layout.root
    state = _State(layout.pipeline_file)
    context = _Context(recipe, layout, state, out)
    reports: list[StageReport] = []
    for index, name in enumerate(STAGES):
        stage = _STAGES[name]
        if index < first or index > last:
            reports.append(StageReport(name, "not run"))
            continue
        inputs = stage.inputs(context)
        if inputs is None:
            reports.append(StageReport(name, "nothing to do", note=stage.idle_reason(context)))
            continue
        done = state.data["stages"].get(name, {})
        if (
            name not in force
            and done.get("fingerprint") == inputs
            and all(Path(a).exists() for a in done.get("artifacts", []))
        ):
            out.print(f"[dim]{name}: inputs unchanged, skipped[/]")
            reports.append(StageReport(name, "skipped", 0.0, done.get("artifacts", []),
                                       done.get("figures", {})))  # fmt: skip
            continue
        out.rule(f"{name}")
        if name == "train" and name in force:
            state.data.pop("previous_train_fingerprint", None)  # forced: start over
        state.data["running"] = {"stage": name, "fingerprint": inputs}
        state.save()
        started = time.perf_counter()
        report = stage.run(context, inputs)
        report.seconds = time.perf_counter() - started
        state.data["stages"][name] = {
            "fingerprint": inputs,
            "artifacts": report.artifacts,
            "figures": report.figures,
            "seconds": round(report.seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        state.data.pop("running", None)
        state.save()
        reports.append(report)
    push = state.data["stages"].get("push", {})
    export = state.data["stages"].get("export", {})
    gguf = next((Path(a) for a in export.get("artifacts", []) if a.endswith(".gguf")), None)
    return RunResult(run_dir, reports, push.get("figures", {}).get("version"), gguf)


@dataclass
class _Context:
    recipe: Recipe
    layout: RunLayout
    state: _State
    console: Console


@dataclass(frozen=True)
class _Stage:
    inputs: Callable[[_Context], str | None]
    run: Callable[[_Context, str], StageReport]
    idle_reason: Callable[[_Context], str] = lambda context: ""


# -- data --------------------------------------------------------------------------------


def _data_inputs(c: _Context) -> str | None:
    if c.recipe.train.data_dir:
        return None
    from astra_tune.data.sources import expand_sources

    sources = []
    for source in expand_sources(c.recipe.data.sources):
        path = Path(source.path).expanduser()
        content = c.state.tree_hash(path) if path.exists() else None
        sources.append([source.model_dump(mode="json"), content])
    return _hash("data", c.recipe.data.model_dump(mode="json"), c.recipe.base_model,
                 c.recipe.seed, sources)  # fmt: skip


def _data_run(c: _Context, inputs: str) -> StageReport:
    import shutil

    from astra_tune.data.prepare import prepare_data

    if c.layout.prepared.exists():
        shutil.rmtree(c.layout.prepared)  # prepared from other inputs: make it again
    result = prepare_data(c.recipe.data, c.layout.prepared, base_model=c.recipe.base_model,
                          seed=c.recipe.seed, console=c.console)  # fmt: skip
    files = sorted(str(p) for p in c.layout.prepared.glob("*.jsonl"))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    return StageReport("data", "ran", artifacts=files, figures={"records": counts})


# -- augment -----------------------------------------------------------------------------


def _augment_inputs(c: _Context) -> str | None:
    config = c.recipe.data.augment
    if config is None or c.recipe.train.data_dir:
        return None
    prepared = sorted(c.layout.prepared.glob("*.jsonl"))
    if not prepared:
        return _hash("augment", "data not prepared yet", config.model_dump(mode="json"))
    prompts = [Path(config.prompts)] if config.prompts else []
    return _hash("augment", config.model_dump(mode="json"),
                 c.recipe.data.split.model_dump(mode="json"),
                 c.state.tree_hash(*prepared, *prompts))  # fmt: skip


def _augment_run(c: _Context, inputs: str) -> StageReport:
    from astra_tune.data.augment import augment_data

    config = c.recipe.data.augment
    assert config is not None
    _needs(c.layout.prepared / "train.jsonl", "augment", "data")
    result = augment_data(config, c.recipe.data, c.layout.prepared, c.layout.augmented,
                          console=c.console)  # fmt: skip
    figures = {
        kind: f"{result.accepted[kind]} kept of {count}" for kind, count in result.generated.items()
    }
    figures["requests"] = f"{result.requests} sent, {result.cached} cached, {result.tokens} tokens"
    if result.stopped_by_budget:
        figures["stopped"] = "data.augment.max_cost_tokens reached"
    files = sorted(str(p) for p in c.layout.augmented.glob("*.jsonl"))
    return StageReport("augment", "ran", artifacts=files, figures=figures)


# -- train -------------------------------------------------------------------------------


def _train_inputs(c: _Context) -> str | None:
    data = c.layout.data
    if not (data / "train.jsonl").is_file():
        return _hash("train", "data not prepared yet", c.recipe.train.model_dump(mode="json"))
    settings = c.recipe.train.model_dump(mode="json", exclude={"output_dir"})
    return _hash("train", settings, c.recipe.base_model, c.recipe.seed,
                 c.state.tree_hash(*sorted(data.glob("*.jsonl"))))  # fmt: skip


def _train_run(c: _Context, inputs: str) -> StageReport:
    from astra_tune.train.run import last_checkpoint, train_model

    running = c.state.data.get("previous_train_fingerprint")
    checkpoint = last_checkpoint(c.layout)
    resume = checkpoint is not None and running == inputs
    if checkpoint is not None and not resume:
        import shutil

        # Checkpoints of other inputs (a changed recipe or data) cannot be continued.
        shutil.rmtree(c.layout.checkpoints, ignore_errors=True)
    c.state.data["previous_train_fingerprint"] = inputs
    c.state.save()
    recipe = c.recipe.model_copy(
        update={"eval": c.recipe.eval.model_copy(update={"after_training": False})}
    )
    if resume:
        c.console.print(f"resuming training from {checkpoint}")
    result = train_model(recipe, resume=resume, console=c.console)
    figures = {
        "steps": str(result.global_step),
        "epochs": f"{result.epochs:g}",
        "batch": str(result.batch_size),
    }
    if result.final_train_loss is not None:
        figures["train loss"] = f"{result.final_train_loss:.3f}"
    if result.final_val_loss is not None:
        figures["val loss"] = f"{result.final_val_loss:.3f}"
    if resume:
        figures["resumed"] = str(checkpoint.name if checkpoint else "")
    return StageReport("train", "ran", artifacts=[str(result.output_dir)], figures=figures)


# -- eval --------------------------------------------------------------------------------


def _eval_inputs(c: _Context) -> str | None:
    test = c.layout.test
    if not test.is_file() or not test.stat().st_size or not c.layout.trained.exists():
        return None if c.layout.trained.exists() else _hash("eval", "not trained yet")
    return _hash("eval", c.recipe.eval.model_dump(mode="json", exclude={"after_training"}),
                 c.state.tree_hash(c.layout.trained), c.state.tree_hash(test))  # fmt: skip


def _needs(path: Path, stage: str, earlier: str) -> None:
    if not path.exists():
        raise ConfigError(
            f"the {stage} stage needs {path}, which the {earlier} stage makes",
            where=str(path.parent),
            fix=f"run from an earlier stage (--from {earlier}), or without --from",
        )


def _eval_run(c: _Context, inputs: str) -> StageReport:
    from astra_tune.evaluate.stage import default_against, evaluate_model
    from astra_tune.progress import progress_bar

    _needs(c.layout.trained, "eval", "train")

    with progress_bar(console=c.console) as bar:
        result = evaluate_model(
            str(c.layout.trained), c.layout.test, c.recipe.eval,
            against=default_against(str(c.layout.trained)), out_dir=c.layout.eval_dir, progress=bar,
        )  # fmt: skip
    figures = {}
    for comparison in result.comparisons:
        d = comparison.difference
        label = "facts stated %" if comparison.metric == "facts" else comparison.metric
        figures[label] = (
            f"{comparison.model.value:.2f} vs {comparison.against.value:.2f} "
            f"({d.value:+.2f} [{d.low:+.2f}, {d.high:+.2f}])"
        )
    report = str(c.layout.eval_dir / "report.html")
    return StageReport("eval", "ran", artifacts=[report], figures=figures)


# -- export ------------------------------------------------------------------------------


def _export_inputs(c: _Context) -> str | None:
    if not c.layout.trained.exists():
        return _hash("export", "not trained yet")
    return _hash("export", c.recipe.export.model_dump(mode="json"),
                 c.state.tree_hash(c.layout.trained))  # fmt: skip


def _export_run(c: _Context, inputs: str) -> StageReport:
    from astra_tune.errors import VerificationError
    from astra_tune.export.stage import export_model
    from astra_tune.progress import progress_bar

    _needs(c.layout.trained, "export", "train")

    with progress_bar(console=c.console) as bar:
        result = export_model(str(c.layout.root), c.recipe.export, progress=bar)
    if not result.passed:
        failed = [r.file for r in result.reports if not r.passed]
        raise VerificationError(f"exported files failed verification: {', '.join(failed)}",
                                where=str(result.verify_path))  # fmt: skip
    figures = {}
    tops = {r.file: r.top1 for r in result.reports}
    for file in result.files:
        top = tops.get(file.path.name)
        figures[file.path.name] = f"{file.size_bytes / 2**20:.1f} MiB" + (
            f", top-1 {top:.1%}" if top is not None else ""
        )
    for qtype, reasons in result.dropped.items():
        figures[f"dropped {qtype}"] = f"{reasons[0]} (set export.quant to keep it)"
    artifacts = [str(f.path) for f in result.files]
    if result.modelfile is not None:
        artifacts.append(str(result.modelfile))
    return StageReport("export", "ran", artifacts=artifacts, figures=figures)


# -- push --------------------------------------------------------------------------------


def _exported(c: _Context) -> list[Path]:
    """The GGUFs the last export wrote (not older files left in its directory)."""
    artifacts = c.state.data["stages"].get("export", {}).get("artifacts", [])
    return [Path(a) for a in artifacts if a.endswith(".gguf") and Path(a).is_file()]


def _push_inputs(c: _Context) -> str | None:
    if not c.recipe.registry.push:
        return None
    ggufs = _exported(c)
    if not ggufs:
        return _hash("push", "not exported yet")
    return _hash("push", c.recipe.registry.model_dump(mode="json"), c.recipe.name,
                 c.state.tree_hash(*ggufs))  # fmt: skip


def _push_run(c: _Context, inputs: str) -> StageReport:
    from astra_tune.export.versions import request_from_run
    from astra_tune.registry.store import Registry

    ggufs = _exported(c)
    if not ggufs:
        raise ConfigError(
            "the push stage needs the GGUF files the export stage writes",
            where=str(c.layout.root),
            fix="run from an earlier stage (--from export), or without --from",
        )
    name = c.recipe.registry.name or c.recipe.name
    registry = Registry()
    pushed = registry.push(request_from_run(c.layout.root, name, ggufs))
    reference = f"{pushed.name}:{pushed.version}"
    for alias in c.recipe.registry.aliases:
        registry.tag(reference, alias, reason="astra run")
    figures = {"version": reference}
    if pushed.existing:
        figures["stored"] = "already (same content)"
    if c.recipe.registry.aliases:
        figures["aliases"] = ", ".join(c.recipe.registry.aliases)
    return StageReport("push", "ran", artifacts=[], figures=figures)


_STAGES = {
    "data": _Stage(_data_inputs, _data_run, lambda c: "train.data_dir is prepared already"),
    "augment": _Stage(_augment_inputs, _augment_run, lambda c: "data.augment is not set"),
    "train": _Stage(_train_inputs, _train_run),
    "eval": _Stage(_eval_inputs, _eval_run, lambda c: "the prepared data has no test split"),
    "export": _Stage(_export_inputs, _export_run),
    "push": _Stage(_push_inputs, _push_run, lambda c: "registry.push is false"),
}
