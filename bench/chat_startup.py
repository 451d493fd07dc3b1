"""Time-to-first-token of `astra chat` on the embedded default, cold and warm.

Baseline (same run, same machine): transformers loading the bundled GGUF directly, which
is what a user without Astra's model cache would do on every start.

    .venv/bin/python bench/chat_startup.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "What is the capital of France? Answer in one word."

BASELINE = """
import sys, threading
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer
from astra_tune.models.catalog import DEFAULT_MODEL, bundled_gguf_path, catalog_entry
gguf = bundled_gguf_path(catalog_entry(DEFAULT_MODEL))
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
ids = tok.apply_chat_template([{"role": "user", "content": sys.argv[1]}],
    add_generation_prompt=True, return_tensors="pt", return_dict=True)
streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
threading.Thread(target=model.generate, kwargs=dict(**ids, streamer=streamer,
    max_new_tokens=32, do_sample=False)).start()
for text in streamer:
    sys.stdout.write(text); sys.stdout.flush()
print()
"""


def first_token(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds to the first byte of stdout, seconds to exit, and the output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    ttft = time.perf_counter() - start
    rest = proc.stdout.read()
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return ttft, total, (first + rest).decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm runs per condition")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="astra-bench-")
    env = {**os.environ, "ASTRA_HOME": home, "HF_HUB_OFFLINE": "1"}
    astra = [sys.executable, "-m", "astra_tune", "chat", "smollm2-135m-instruct"]
    chat = [*astra, "-p", QUESTION, "--temperature", "0", "--max-tokens", "32"]
    gguf = subprocess.run(
        [
            sys.executable,
            "-c",
            "from astra_tune.models.catalog import *;"
            "print(bundled_gguf_path(catalog_entry(DEFAULT_MODEL)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    rows: list[dict[str, object]] = []

    def record(name: str, cmd: list[str], repeats: int) -> None:
        runs = [first_token(cmd, env) for _ in range(repeats)]
        rows.append(
            {
                "condition": name,
                "runs": repeats,
                "ttft_s": round(statistics.median(r[0] for r in runs), 2),
                "total_s": round(statistics.median(r[1] for r in runs), 2),
                "answer": runs[-1][2][:60],
            }
        )
        print(
            f"{name:48s} ttft {rows[-1]['ttft_s']:6.2f} s   total {rows[-1]['total_s']:6.2f} s"
            f"   {rows[-1]['answer']!r}",
            flush=True,
        )

    record(
        "baseline: transformers reads the GGUF each start",
        [sys.executable, "-c", BASELINE, QUESTION],
        args.repeats,
    )
    record("astra chat, cold cache (dequantize once)", chat, 1)
    record("astra chat, warm cache (transformers)", chat, args.repeats)
    record(
        "astra chat FILE.gguf (llama.cpp)",
        [
            sys.executable,
            "-m",
            "astra_tune",
            "chat",
            gguf,
            "-p",
            QUESTION,
            "--temperature",
            "0",
            "--max-tokens",
            "32",
        ],
        args.repeats,
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
