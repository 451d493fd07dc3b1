"""`astra data prepare`: sources in, clean split records and a report out.

Order: read and normalize -> system prompt -> clean -> filter -> exact dedup -> near dedup
-> token filters -> split -> contamination check -> write (atomically) -> report.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from astra_tune.atomic import staged_dir
from astra_tune.data.clean import Cleaner
from astra_tune.data.dedup import exact_duplicates, near_duplicates
from astra_tune.data.filters import RecordFilter, count_tokens
from astra_tune.data.formats import (
    FORMAT_NAMES,
    Record,
    RowError,
    all_text,
    apply_mapping,
    check_row,
    detect_format,
    known_formats,
    normalize,
    prompt_text,
    record_kind,
    response_text,
    suggest_mapping,
)
from astra_tune.data.inspect import rendered_text
from astra_tune.data.sources import ReadStats, expand_sources, read_rows
from astra_tune.errors import DataError
from astra_tune.models.resolve import load_tokenizer
from astra_tune.progress import progress_bar
from astra_tune.recipe import DataConfig, SourceConfig

SPLITS = ("train", "val", "test")
DUPLICATE_EXACT = "exact duplicate"
DUPLICATE_NEAR = "near duplicate"
CONTAMINATED = "val/test prompt near a training prompt"


@dataclass
class PrepareResult:
    """What `prepare_data` wrote and what it found."""

    out_dir: Path
    counts: dict[str, int]
    report: dict[str, Any]


@dataclass
class _Pool:
    """Records in reading order, with where each must go and why some were dropped."""

    records: list[Record] = field(default_factory=list)
    assigned: list[str | None] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)
    drops: Counter[str] = field(default_factory=Counter)
    drop_examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, record: Record, assigned: str | None, repeat: int = 1) -> None:
        self.records.append(record)
        self.assigned.append(assigned)
        self.repeats.append(repeat)
        self.alive.append(True)

    def drop(self, index: int, reason: str) -> None:
        self.alive[index] = False
        self.drops[reason] += 1
        examples = self.drop_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(self.records[index]["source"])

    def living(self) -> list[int]:
        return [i for i, alive in enumerate(self.alive) if alive]


def prepare_data(
    config: DataConfig,
    out_dir: Path,
    *,
    base_model: str,
    seed: int,
    console: Console | None = None,
) -> PrepareResult:
    """Read `config.sources`, clean, filter, deduplicate and split them into `out_dir`."""
    started = time.perf_counter()
    sources = expand_sources(config.sources)
    if not sources:
        raise DataError(
            "no data sources given",
            fix="pass files or directories to `astra data prepare`, or list them in data.sources",
        )
    pool = _Pool()
    stats = ReadStats()
    record_filter = RecordFilter(config.filters)
    with progress_bar(console=console) as progress:
        per_source = _read_all(sources, config, pool, stats, progress)
        _clean_and_filter(pool, config, record_filter, progress)
        clusters = _deduplicate(pool, config, progress)
        tokenizer = _drop_by_tokens(pool, record_filter, base_model, progress)
    living = pool.living()
    if not living:
        reason, count = pool.drops.most_common(1)[0]
        raise DataError(
            f"no records left: '{reason}' removed {count} of {len(pool.records)}",
            fix="loosen that filter in the recipe's data section (see `astra recipe show`)",
        )
    splits, stratify = _split(pool, living, config, seed)
    contamination = _decontaminate(pool, splits, config)
    # Upsampling comes last: copies must neither count as duplicates nor be split apart.
    repeated = sum(pool.repeats[i] - 1 for i in splits["train"])
    splits["train"] = [i for i in splits["train"] for _ in range(pool.repeats[i])]
    if not splits["train"]:
        raise DataError(
            "no training records left after splitting",
            fix="lower data.split.val / data.split.test, or add data",
        )
    report = {
        "base_model": base_model,
        "seed": seed,
        "sources": per_source,
        "read": len(pool.records) + stats.bad_lines,
        "bad_lines": stats.bad_lines,
        "bad_line_examples": stats.bad_examples or [],
        "kinds": dict(Counter(record_kind(pool.records[i]) for i in living)),
        "drops": dict(pool.drops.most_common()),
        "drop_examples": pool.drop_examples,
        "duplicates": {
            "exact": pool.drops[DUPLICATE_EXACT],
            "near": pool.drops[DUPLICATE_NEAR],
            "clusters": clusters[:200],
        },
        "contamination": contamination,
        "repeated": repeated,
        "split": {"stratify": stratify, "counts": {name: len(splits[name]) for name in SPLITS}},
        "tokens": _token_lengths(tokenizer, pool, splits),
        "languages": _languages(record_filter, pool, living),
        "config": config.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    _write(out_dir, pool, splits, report)
    return PrepareResult(out_dir, report["split"]["counts"], report)


def _read_all(
    sources: list[SourceConfig],
    config: DataConfig,
    pool: _Pool,
    stats: ReadStats,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Every source's records into the pool; what each source gave, for the report."""
    per_source: list[dict[str, Any]] = []
    task = progress.add_task("reading sources", total=None, unit="rec")
    for source in sources:
        before = len(pool.records)
        fmt = _read_source(source, config, pool, stats, lambda: progress.advance(task))
        count = len(pool.records) - before
        entry: dict[str, Any] = {"path": source.path, "format": fmt, "records": count}
        crawl = stats.crawls.get(source.path)
        if crawl is not None:
            entry["crawl"] = {"pages": crawl.pages, "fetched": crawl.fetched,
                              "cached": crawl.cached, "skipped": crawl.skipped}  # fmt: skip
        per_source.append(entry)
    progress.update(task, total=len(pool.records), completed=len(pool.records))
    if not pool.records:
        raise DataError(
            "the sources hold no records",
            where=", ".join(s.path for s in sources),
            fix="check that the files are not empty (or that --skip-bad-lines kept some)",
        )
    return per_source


def _clean_and_filter(
    pool: _Pool, config: DataConfig, record_filter: RecordFilter, progress: Progress
) -> None:
    task = progress.add_task("cleaning and filtering", total=len(pool.records), unit="rec")
    cleaner = Cleaner(config.clean)
    for index, record in enumerate(pool.records):
        _add_system_prompt(record, config.system_prompt)
        cleaner.record(record)
        reason = record_filter.reason(record)
        if reason is not None:
            pool.drop(index, reason)
        progress.advance(task)


def _deduplicate(pool: _Pool, config: DataConfig, progress: Progress) -> list[dict[str, Any]]:
    """Drop exact, then near duplicates; the clusters found, for the report."""
    # Records of different kinds (a chat and a preference pair on the same question)
    # teach different things, so duplicates are only looked for within a kind.
    kinds = [record_kind(record) for record in pool.records]
    texts = [all_text(record) for record in pool.records]
    clusters: list[dict[str, Any]] = []
    if config.dedup.exact:
        living = pool.living()
        found = exact_duplicates([f"{kinds[i]}\x00{texts[i]}" for i in living])
        _apply_clusters(pool, living, found.members, DUPLICATE_EXACT, clusters)
    if config.dedup.near:
        living = pool.living()
        task = progress.add_task("near-duplicate search", total=len(living), unit="rec")
        for kind in sorted(set(kinds)):
            candidates = [i for i in living if kinds[i] == kind]
            found = near_duplicates(
                texts,
                candidates,
                threshold=config.dedup.near_threshold,
                num_perm=config.dedup.num_perm,
                shingle_words=config.dedup.shingle_words,
            )
            _apply_clusters(pool, None, found.members, DUPLICATE_NEAR, clusters)
            progress.advance(task, len(candidates))
    return clusters


def _drop_by_tokens(
    pool: _Pool, record_filter: RecordFilter, base_model: str, progress: Progress
) -> Any:
    """Apply the token-length filters with the base model's tokenizer (returned)."""
    task = progress.add_task("tokenizing", total=None, unit="rec")
    tokenizer = load_tokenizer(base_model)
    living = pool.living()
    if record_filter.needs_tokens:
        answers = count_tokens(tokenizer, [response_text(pool.records[i]) for i in living])
        for index, reason in zip(living, record_filter.token_reasons(answers), strict=True):
            if reason is not None:
                pool.drop(index, reason)
    progress.update(task, total=len(living), completed=len(living))
    return tokenizer


def _read_source(
    source: SourceConfig, config: DataConfig, pool: _Pool, stats: ReadStats, tick: Any
) -> str:
    """Append one source's records to the pool; returns the format it had."""
    forced = source.format if source.format != "auto" else config.format
    mapping = source.mapping or config.mapping
    fmt: str | None = None if forced == "auto" else forced
    first = ""
    for row in read_rows(source, skip_bad_lines=config.skip_bad_lines, stats=stats):
        data = apply_mapping(row.data, mapping)
        row_format = row.fixed_format or fmt
        if row_format is None:
            row_format = detect_format(set(data))
            if row_format is None:
                hint = suggest_mapping(data)
                rename = (
                    f"Rename the columns: {hint} (in a recipe: data.mapping)"
                    if hint
                    else "Rename columns with --map canonical=column (e.g. --map "
                    "prompt=question --map completion=answer)"
                )
                raise DataError(
                    f"unknown record shape; fields seen: {', '.join(sorted(data)) or 'none'}",
                    where=row.location,
                    fix=f"{rename}, or set --format. Known formats: {known_formats()}",
                )
            fmt, first = row_format, row.location
        elif row.fixed_format is None:
            check_row(data, row_format, row.location, first or None)
        try:
            record = normalize(data, row_format)
        except RowError as exc:
            if config.skip_bad_lines:
                stats.skip(row.location, str(exc))
                continue
            raise DataError(
                str(exc), where=row.location, fix=f"fix this {row_format} record"
            ) from exc
        record["source"] = row.location
        pool.add(record, source.assign_to, source.repeat)
        tick()
    return fmt or (forced if forced != "auto" else "documents")


def _add_system_prompt(record: Record, system_prompt: str | None) -> None:
    if not system_prompt:
        return
    turns = record.get("messages") or record.get("prompt")
    if turns is not None and not any(m["role"] == "system" for m in turns):
        turns.insert(0, {"role": "system", "content": system_prompt})


def _apply_clusters(
    pool: _Pool,
    positions: Sequence[int] | None,
    members: dict[int, list[int]],
    reason: str,
    clusters: list[dict[str, Any]],
) -> None:
    """Drop the copies in `members`; indices are into `positions` when given, else the pool."""

    def real(i: int) -> int:
        return positions[i] if positions is not None else i

    for kept, copies in members.items():
        for copy in copies:
            pool.drop(real(copy), reason)
        clusters.append(
            {
                "kind": "exact" if reason == DUPLICATE_EXACT else "near",
                "kept": pool.records[real(kept)]["source"],
                "dropped": [pool.records[real(c)]["source"] for c in copies],
            }
        )


def _split(
    pool: _Pool, living: list[int], config: DataConfig, seed: int
) -> tuple[dict[str, list[int]], str]:
    from astra_tune.data.split import stratified_split

    free = [i for i in living if pool.assigned[i] is None]
    stratify = config.split.stratify
    if stratify == "auto":
        with_category = sum(1 for i in free if "category" in pool.records[i])
        files = {_source_file(pool.records[i]["source"]) for i in free}
        stratify = (
            "category"
            if free and with_category * 2 >= len(free)
            else ("source" if len(files) > 1 else "none")
        )
    if stratify == "category":
        groups = [str(pool.records[i].get("category", "")) for i in free]
    elif stratify == "source":
        groups = [_source_file(pool.records[i]["source"]) for i in free]
    else:
        groups = [""] * len(free)
    pinned = {pool.assigned[i] for i in living if pool.assigned[i] is not None}
    plan = stratified_split(
        groups,
        val=0.0 if "val" in pinned else config.split.val,
        test=0.0 if "test" in pinned else config.split.test,
        seed=seed,
    )
    splits = {
        "train": [free[i] for i in plan.train],
        "val": [free[i] for i in plan.val],
        "test": [free[i] for i in plan.test],
    }
    for index in living:
        if pool.assigned[index] is not None:
            splits[pool.assigned[index]].append(index)  # type: ignore[index]
    for name in SPLITS:
        splits[name].sort()
    return splits, stratify


def _source_file(location: str) -> str:
    return location.rsplit(":", 1)[0]


def _decontaminate(pool: _Pool, splits: dict[str, list[int]], config: DataConfig) -> dict[str, Any]:
    from astra_tune.data.split import contaminated

    threshold = config.split.contamination_threshold
    if threshold is None:
        return {"threshold": None, "removed": 0, "examples": []}
    train_prompts = [prompt_text(pool.records[i]) for i in splits["train"]]
    held_out = splits["val"] + splits["test"]
    hits = contaminated(
        train_prompts,
        [prompt_text(pool.records[i]) for i in held_out],
        threshold=threshold,
        num_perm=config.dedup.num_perm,
        shingle_words=config.dedup.shingle_words,
    )
    removed = {held_out[position] for position, _, _ in hits}
    for index in removed:
        pool.drop(index, CONTAMINATED)
    for name in ("val", "test"):
        splits[name] = [i for i in splits[name] if i not in removed]
    examples = [
        {
            "held_out": pool.records[held_out[position]]["source"],
            "train": pool.records[splits["train"][train]]["source"],
            "similarity": round(similarity, 3),
        }
        for position, train, similarity in hits[:50]
    ]
    return {"threshold": threshold, "removed": len(removed), "examples": examples}


def _token_lengths(tokenizer: Any, pool: _Pool, splits: dict[str, list[int]]) -> dict[str, Any]:
    """Percentiles of each split's length in tokens, as training will render it."""
    import numpy as np

    out: dict[str, Any] = {}
    for name in SPLITS:
        indices = splits[name]
        if not indices:
            out[name] = None
            continue
        counts = np.array(
            count_tokens(tokenizer, [rendered_text(tokenizer, pool.records[i]) for i in indices])
        )
        out[name] = {
            "count": len(counts),
            "mean": round(float(counts.mean()), 1),
            "p5": int(np.percentile(counts, 5)),
            "p50": int(np.percentile(counts, 50)),
            "p95": int(np.percentile(counts, 95)),
            "max": int(counts.max()),
            "total": int(counts.sum()),
            "histogram": [int(c) for c in counts.tolist()] if len(counts) <= 5000 else None,
        }
    return out


def _languages(record_filter: RecordFilter, pool: _Pool, living: list[int]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for index in living:
        answer = response_text(pool.records[index])
        if len(answer) < record_filter.config.language_min_chars:
            counts["(too short to tell)"] += 1
        else:
            counts[record_filter.detector.detect(answer)[0]] += 1
    return dict(counts.most_common())


def _write(
    out_dir: Path, pool: _Pool, splits: dict[str, list[int]], report: dict[str, Any]
) -> None:
    from astra_tune.data.report import render_html

    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "report.json").is_file():
        # The whole directory is swapped in at the end, so never take over a foreign one.
        raise DataError(
            f"{out_dir} exists and is not a prepared-data directory (no report.json)",
            where=str(out_dir),
            fix="choose a new or empty output directory",
        )
    with staged_dir(out_dir) as staging:
        for name in SPLITS:
            with (staging / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
                for index in splits[name]:
                    handle.write(json.dumps(pool.records[index], ensure_ascii=False) + "\n")
        (staging / "report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n"
        )
        (staging / "report.html").write_text(render_html(report), encoding="utf-8")


__all__ = ["FORMAT_NAMES", "PrepareResult", "prepare_data"]
