"""Serving throughput and latency on the default model's q4_k_m GGUF, CPU.

  direct      llama-cpp-python in-process, create_completion(stream=True): the ceiling
  astra       `astra serve`, OpenAI /v1/chat/completions over HTTP, streamed
  llama.cpp   `python -m llama_cpp.server` on the same file, same request (baseline server)

For each server: single-stream decode tokens/s (bar: astra >= 0.95x direct), then 1 and 4
concurrent clients: total generated tokens/s and p50/p99 time to first token.
Requests are greedy (temperature 0) with a fixed max_tokens and ignore the end-of-turn
token so every request generates the same number of tokens.

    .venv/bin/python bench/serve_bench.py GGUF [--tokens 128] [--requests 8] [--threads N]
        [--json out.json]

The llama.cpp server needs `pip install 'llama-cpp-python[server]'` extras
(sse-starlette, starlette-context, pydantic-settings); it is skipped without them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


class Direct:
    """llama-cpp-python in this process, same sampling, no HTTP: the ceiling."""

    def __init__(self, gguf: Path, threads: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(str(gguf), n_ctx=4096, n_threads=threads, verbose=False)
        self.prompt = self.llm.tokenize(
            b"Write a long story about a lighthouse keeper.", add_bos=True
        )
        self.llm.create_completion(prompt=self.prompt, max_tokens=8, temperature=0)  # warm-up

    def decode_rate(self, tokens: int) -> float:
        first = None
        count = 0
        no_eos = {self.llm.token_eos(): -100.0}
        chunks = self.llm.create_completion(
            prompt=self.prompt, max_tokens=tokens, temperature=0, stream=True, logit_bias=no_eos
        )
        for _chunk in chunks:
            count += 1
            if first is None:
                first = time.perf_counter()
        assert first is not None
        return (count - 1) / (time.perf_counter() - first)


def one_request(url: str, model: str, tokens: int, eos_id: int) -> dict[str, float]:
    """One streamed chat request; time to first token and decode rate after it.

    The client shares this machine's cores with the server, so it is kept lean: raw reads
    from `http.client` and a byte count of content chunks, no per-chunk JSON parsing after
    the first token (a client on its own machine would cost the server nothing).
    """
    body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": True, "logit_bias": {str(eos_id): -100}}  # fmt: skip
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{url}: HTTP {response.status}: {response.read()[:300]!r}")
    first = None
    count = 0
    pending = b""
    while True:
        data = response.read1(65536)
        if not data:
            break
        if first is None:
            pending += data
            for event in pending.split(b"\n\n")[:-1]:
                if not event.startswith(b"data: {"):
                    continue
                chunk = json.loads(event[6:])
                if chunk["choices"] and chunk["choices"][0].get("delta", {}).get("content"):
                    first = time.perf_counter()
                    count = 1
                    after = pending.split(event, 1)[1]
                    count += after.count(b'"content"')
                    break
            continue
        count += data.count(b'"content"')
    ended = time.perf_counter()
    conn.close()
    assert first is not None
    return {"ttft": first - started, "tokens": count, "decode": (count - 1) / (ended - first),
            "seconds": ended - started}  # fmt: skip


def load(
    url: str, model: str, tokens: int, eos_id: int, clients: int, requests: int
) -> dict[str, float]:
    results: list[dict[str, float]] = []
    lock = threading.Lock()
    todo = list(range(requests))

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            result = one_request(url, model, tokens, eos_id)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
        "single_decode": statistics.median(r["decode"] for r in results),
    }


def measure(
    name: str, command: list[str], url: str, model: str, args: Any, eos_id: int, ceiling: Direct
) -> dict[str, Any]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(f"{url}/v1/models", proc)
        one_request(url, model, 8, eos_id)  # load + warm-up
        # Direct and served single streams alternate, so drift in the machine's speed
        # (other tenants, thermal) lands on both sides of the ratio alike.
        pairs = []
        for _ in range(args.rounds):
            direct = ceiling.decode_rate(args.tokens)
            served = one_request(url, model, args.tokens, eos_id)["decode"]
            pairs.append((direct, served))
        single = load(url, model, args.tokens, eos_id, 1, 3)
        four = load(url, model, args.tokens, eos_id, 4, args.requests)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    direct_rate = statistics.median(d for d, _ in pairs)
    served_rate = statistics.median(s for _, s in pairs)
    ratios = [s / d for d, s in pairs]
    return {"server": name, "direct": direct_rate, "served": served_rate,
            "ratio": statistics.median(ratios), "ratios": ratios,
            "single": single, "four": four}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rounds", type=int, default=5, help="alternating single-stream pairs")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="llama.cpp threads, the same for every contender (default: all cores)",
    )  # fmt: skip
    args = parser.parse_args()
    from llama_cpp import Llama

    probe = Llama(str(args.gguf), vocab_only=True, verbose=False)
    eos_id = probe.token_eos()
    probe.close()
    rows: list[dict[str, Any]] = []
    ceiling = Direct(args.gguf, args.threads)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    astra = [sys.executable, "-m", "astra_tune", "serve", "-m", str(args.gguf), "--port", str(port),
             "--max-queue", "64"]  # fmt: skip
    os.environ["ASTRA_SERVE_N_THREADS"] = str(args.threads)  # the server reads it at start
    name = f"{args.gguf.stem}:latest"
    rows.append(measure("astra serve", astra, url, name, args, eos_id, ceiling))
    try:
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # interrupt_requests off: by default llama_cpp.server ends a running stream when
        # another request arrives, which would make its 4-client figures meaningless.
        server = [sys.executable, "-m", "llama_cpp.server", "--model", str(args.gguf),
                  "--port", str(port), "--n_ctx", "4096", "--n_threads", str(args.threads),
                  "--interrupt_requests", "False"]  # fmt: skip
        rows.append(measure("llama_cpp.server", server, url, str(args.gguf), args, eos_id, ceiling))
    except ImportError:
        print("llama_cpp.server extras missing: baseline server skipped", file=sys.stderr)
    print(f"{args.rounds} alternating single-stream rounds of {args.tokens} tokens, "
          f"{args.threads} threads")  # fmt: skip
    header = ("server", "direct t/s", "served t/s", "x direct", "ratios", "1c TTFT p50",
              "4c tok/s", "4c TTFT p50", "4c TTFT p99")  # fmt: skip
    print(f"{header[0]:<18}" + "".join(f"{h:>13}" for h in header[1:]))
    for row in rows:
        s, f = row["single"], row["four"]
        spread = f"{min(row['ratios']):.2f}-{max(row['ratios']):.2f}"
        values = (f"{row['direct']:.1f}", f"{row['served']:.1f}", f"{row['ratio']:.3f}", spread,
                  f"{s['ttft_p50']:.3f}", f"{f['tokens_per_s']:.1f}", f"{f['ttft_p50']:.3f}",
                  f"{f['ttft_p99']:.3f}")  # fmt: skip
        print(f"{row['server']:<18}" + "".join(f"{v:>13}" for v in values))
    if args.json:
        args.json.write_text(json.dumps({"servers": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
