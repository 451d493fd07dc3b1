"""Data preparation throughput and near-duplicate quality on a generated 100k-record file.

Measures, in one run:
  baseline    json.loads of every line (the floor any JSONL reader pays)
  stage A     read + detect + normalize + clean + filter + exact dedup (records/s)
  stage B     near-duplicate search (MinHash LSH) over stage A's survivors (seconds),
              with recall and precision against the planted copies
  end to end  `prepare_data` on the same file (tokenizer of the default model included)

    .venv/bin/python bench/data_bench.py [--records 100000] [--json out.json] [--skip-e2e]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from astra_tune.data.clean import Cleaner
from astra_tune.data.dedup import exact_duplicates, near_duplicates
from astra_tune.data.filters import RecordFilter
from astra_tune.data.formats import all_text, apply_mapping, check_row, detect_format, normalize
from astra_tune.data.sources import ReadStats, read_rows
from astra_tune.data.synthetic import planted_records
from astra_tune.recipe import DataConfig, SourceConfig


def stage_a(path: Path, config: DataConfig) -> tuple[list[str], set[int]]:
    """The per-record pipeline up to exact dedup; returns texts and exact-dropped indices."""
    cleaner, record_filter = Cleaner(config.clean), RecordFilter(config.filters)
    texts: list[str] = []
    dropped: set[int] = set()
    fmt = None
    for row in read_rows(SourceConfig(path=str(path)), skip_bad_lines=False, stats=ReadStats()):
        data = apply_mapping(row.data, config.mapping)
        if fmt is None:
            fmt = detect_format(set(data))
        else:
            check_row(data, fmt, row.location, "")
        record = cleaner.record(normalize(data, fmt))
        if record_filter.reason(record) is not None:
            dropped.add(len(texts))
        texts.append(all_text(record))
    living = [i for i in range(len(texts)) if i not in dropped]
    exact = exact_duplicates([texts[i] for i in living])
    return texts, dropped | {living[i] for i in exact.dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end prepare run")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="astra-data-bench-"))
    planted = planted_records(args.records, seed=7)
    path = workdir / "planted.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in planted.records), encoding="utf-8")
    size_mb = path.stat().st_size / 1e6
    print(f"{len(planted.records)} records ({size_mb:.0f} MB), planted: "
          f"{len(planted.exact)} exact, {len(planted.near)} near copies")  # fmt: skip
    config = DataConfig()

    start = time.perf_counter()
    with path.open(encoding="utf-8") as handle:
        parsed = sum(1 for line in handle if json.loads(line))
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    texts, dropped = stage_a(path, config)
    seconds_a = time.perf_counter() - start
    exact_found = len(dropped & set(planted.exact))

    living = [i for i in range(len(texts)) if i not in dropped]
    start = time.perf_counter()
    near = near_duplicates(
        texts,
        living,
        threshold=config.dedup.near_threshold,
        num_perm=config.dedup.num_perm,
        shingle_words=config.dedup.shingle_words,
    )
    seconds_b = time.perf_counter() - start
    hits = sum(1 for c, kept in ((c, k) for k, cs in near.members.items() for c in cs)
               if planted.near.get(c) == kept)  # fmt: skip
    recall = hits / len(planted.near)
    precision = hits / max(1, len(near.dropped))

    results = {
        "records": len(planted.records),
        "baseline_json_loads_rps": round(parsed / baseline),
        "stage_a_rps": round(len(texts) / seconds_a),
        "stage_a_seconds": round(seconds_a, 2),
        "exact_recall": exact_found / len(planted.exact),
        "near_seconds": round(seconds_b, 2),
        "near_recall": round(recall, 4),
        "near_precision": round(precision, 4),
    }
    print(f"baseline json.loads only          {results['baseline_json_loads_rps']:>9,} records/s")
    print(f"read+normalize+clean+exact dedup  {results['stage_a_rps']:>9,} records/s "
          f"({seconds_a:.1f} s; exact recall {results['exact_recall']:.3f})")  # fmt: skip
    print(f"near-duplicate pass               {seconds_b:>9.1f} s "
          f"(recall {recall:.3f}, precision {precision:.3f})")  # fmt: skip

    if not args.skip_e2e:
        from astra_tune.data.prepare import prepare_data

        start = time.perf_counter()
        config_e2e = DataConfig(sources=[SourceConfig(path=str(path))])
        result = prepare_data(
            config_e2e, workdir / "prepared", base_model="smollm2-135m-instruct", seed=0
        )
        results["end_to_end_seconds"] = round(time.perf_counter() - start, 1)
        results["end_to_end_counts"] = result.counts
        print(f"prepare_data end to end           {results['end_to_end_seconds']:>9.1f} s "
              f"-> {result.counts}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
