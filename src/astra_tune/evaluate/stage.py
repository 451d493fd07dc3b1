"""The evaluation stage: a model (and what it is compared against) on held-out chat records."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from astra_tune.errors import ConfigError, DataError
from astra_tune.evaluate.compare import Comparison, Interval, compare, interval, resamples
from astra_tune.evaluate.engines import Decoding, Message, open_engine
from astra_tune.evaluate.metrics import (
    LIKELIHOOD,
    OVERLAP,
    MetricColumn,
    likelihood_columns,
    overlap_columns,
)
from astra_tune.home import astra_home
from astra_tune.recipe import EvalConfig
from astra_tune.runs import RunLayout


@dataclass
class ModelScores:
    """One model's answers and metric columns on the evaluation records."""

    spec: str
    description: str
    answers: list[str]
    columns: dict[str, MetricColumn]
    intervals: dict[str, Interval] = field(default_factory=dict)


@dataclass
class EvalResult:
    """What `evaluate_model` measured and where it wrote it."""

    out_dir: Path
    records: list[list[Message]]
    model: ModelScores
    against: ModelScores | None
    comparisons: list[Comparison]
    judge: Any = None  # judge.JudgeResult
    seconds: float = 0.0

    def scores(self) -> dict[str, Any]:
        """The content of scores.json."""
        out: dict[str, Any] = {
            "examples": len(self.records),
            "model": {"spec": self.model.spec, "description": self.model.description,
                      "scores": {k: v.to_json() for k, v in self.model.intervals.items()}},
        }  # fmt: skip
        if self.against is not None:
            out["against"] = {
                "spec": self.against.spec,
                "description": self.against.description,
                "scores": {k: v.to_json() for k, v in self.against.intervals.items()},
            }
            out["comparison"] = {c.metric: c.to_json() for c in self.comparisons}
        if self.judge is not None:
            out["judge"] = self.judge.to_json()
        out["seconds"] = round(self.seconds, 1)
        return out


def load_eval_records(path: Path) -> list[list[Message]]:
    """Chat records whose last turn is the assistant's reference answer (errors: file:line)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file", where=str(path), fix="check the --data path")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON: {exc.msg}", where=where) from exc
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or len(messages) < 2:
            raise DataError(
                "the record has no 'messages' list with a prompt and an answer",
                where=where,
                fix='evaluate chat records: {"messages": [..., {"role": "assistant", ...}]}'
                " (astra data prepare writes them)",
            )
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant" or not last.get("content"):
            raise DataError(
                "the last message must be the assistant's reference answer",
                where=f"{where}: messages[{len(messages) - 1}]",
            )
        records.append([{"role": str(m["role"]), "content": str(m.get("content") or "")}
                        for m in messages])  # fmt: skip
    if not records:
        raise DataError(f"{path} holds no records", where=str(path))
    return records


@dataclass(frozen=True)
class EvalPlan:
    """What one `astra eval` compares, on what data, with which settings, written where."""

    spec: str
    data: Path
    against: str | None
    out_dir: Path
    config: EvalConfig


def plan_evaluation(
    spec: str,
    *,
    data: Path | None = None,
    against: str | None = None,
    out_dir: Path | None = None,
    changes: dict[str, Any] | None = None,
) -> EvalPlan:
    """Fill in what was not given. For a run (or its adapter/ or model/): its test split
    (honouring train.data_dir), its base model, RUN/eval and its recipe's `eval:` settings;
    `changes` override those settings. `against="none"` compares with nothing."""
    layout = RunLayout.find(spec)
    recipe = layout.recipe if layout is not None else None
    config = recipe.eval if recipe is not None else EvalConfig()
    if changes:
        config = EvalConfig.model_validate({**config.model_dump(), **changes})
    if data is None:
        if layout is None or not layout.test.is_file():
            raise ConfigError(
                "no evaluation data"
                + (f": the run has no test split at {layout.test}" if layout else ""),
                where="--data",
                fix="pass --data FILE.jsonl (chat records; the last turn is the reference)",
            )
        data = layout.test
    other = default_against(spec) if against is None else against
    if other is not None and other.lower() == "none":
        other = None
    if out_dir is None:
        if layout is not None:
            out_dir = layout.eval_dir
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out_dir = astra_home() / "evals" / f"{Path(spec).name or 'model'}-{stamp}"
    return EvalPlan(spec, data, other, out_dir, config)


def default_against(spec: str) -> str | None:
    """For a training run (or adapter), the base model it was trained from."""
    from astra_tune.models.resolve import parse_spec

    parsed = parse_spec(spec)
    if parsed.kind != "hf_dir" or parsed.path is None:
        return None
    adapter_config = parsed.path / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text(encoding="utf-8"))
        return str(base.get("base_model_name_or_path") or "") or None
    lineage = parsed.path.parent / "lineage.json"
    if lineage.is_file():
        return str(json.loads(lineage.read_text(encoding="utf-8"))["base_model"]["path"])
    return None


def evaluate_model(
    spec: str,
    data: Path,
    config: EvalConfig,
    *,
    against: str | None = None,
    out_dir: Path,
    progress: Progress | None = None,
) -> EvalResult:
    """Score `spec` (and `against`) on `data`; write scores.json, samples.jsonl, report.html."""
    from astra_tune.evaluate.report import write_outputs

    started = time.perf_counter()
    records = load_eval_records(data)[: config.samples]
    bar = progress or Progress(disable=True)
    model = _score(spec, records, config, bar)
    other = _score(against, records, config, bar) if against else None
    rows = resamples(len(records), config.bootstrap, seed=0)
    for scores in (model, other):
        if scores is not None:
            scores.intervals = {k: interval(c, rows) for k, c in scores.columns.items()}
    comparisons = []
    if other is not None:
        comparisons = [compare(model.columns[k], other.columns[k], rows) for k in model.columns]
    result = EvalResult(out_dir, records, model, other, comparisons)
    if config.judge is not None and other is not None:
        from astra_tune.evaluate.judge import judge_pairs

        result.judge = judge_pairs(records, model.answers, other.answers, config.judge, bar)
    result.seconds = time.perf_counter() - started
    write_outputs(result)
    return result


def _score(
    spec: str, records: list[list[Message]], config: EvalConfig, bar: Progress
) -> ModelScores:
    wanted = list(dict.fromkeys(config.metrics))
    label = Path(spec).name or spec
    engine = open_engine(spec)
    try:
        answers: list[str] = []
        columns: list[MetricColumn] = []
        if any(m in OVERLAP for m in wanted) or config.judge is not None:  # the judge reads them
            task = bar.add_task(f"generating ({label})", total=len(records))
            decoding = Decoding(config.max_new_tokens, config.temperature, config.batch_size)
            answers = engine.generate([r[:-1] for r in records], decoding,
                                      lambda n: bar.advance(task, n))  # fmt: skip
            references = [r[-1]["content"] for r in records]
            questions = [next((m["content"] for m in reversed(r[:-1]) if m["role"] == "user"), "")
                         for r in records]  # fmt: skip
            overlap = [m for m in wanted if m in OVERLAP]
            if overlap:
                columns += overlap_columns(overlap, answers, references, questions)
        if any(m in LIKELIHOOD for m in wanted):
            task = bar.add_task(f"scoring references ({label})", total=len(records))
            nll = engine.answer_nll(records, lambda n: bar.advance(task, n))
            columns += [c for c in likelihood_columns(nll) if c.name in wanted]
        description = engine.description
    finally:
        engine.close()
        del engine
        gc.collect()
    ordered = {c.name: c for c in sorted(columns, key=lambda c: wanted.index(c.name))}
    return ModelScores(spec, description, answers, ordered)
