"""llama.cpp engines: a continuous-batching scheduler per loaded model, in an LRU pool.

Each loaded model has one scheduler thread (serve/scheduler.py) that decodes up to
`parallel` sequences in one batch per step; requests beyond that wait in a bounded queue,
and the server answers 429 when slots and queue are all taken, instead of piling up
latency. Tokens travel to the asyncio side through `loop.call_soon_threadsafe`; a cancelled
request stops at the next step.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from astra_tune.errors import AstraError
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.render import GoChatTemplate
from astra_tune.progress import quiet_llama_logs
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.native import NativeModel
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.scheduler import EngineError, Finished, Job, Scheduler, StepStats

__all__ = ["EngineError", "EnginePool", "Finished", "LlamaEngine", "Ticket", "submit_job"]

# `--parallel auto`: the KV cache of all sequences may take this share of the memory free
# when the model loads; more than 16 sequences buys a CPU nothing.
AUTO_MEMORY_SHARE = 0.25
AUTO_MAX_PARALLEL = 16


def kv_bytes_per_token(gguf: Path) -> int:
    """Bytes of f16 K and V cache one token costs this model, from its GGUF header."""
    from astra_tune.models.gguf_meta import read_metadata

    meta = read_metadata(gguf)
    arch = meta.get("general.architecture")
    layers = int(meta[f"{arch}.block_count"])
    heads = int(meta[f"{arch}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv") or heads)
    head_dim = int(meta[f"{arch}.embedding_length"]) // heads
    key = int(meta.get(f"{arch}.attention.key_length") or head_dim)
    value = int(meta.get(f"{arch}.attention.value_length") or head_dim)
    return layers * kv_heads * (key + value) * 2


def auto_parallel(gguf: Path, n_ctx: int) -> int:
    """How many sequences of `n_ctx` tokens fit their KV cache in the memory budget."""
    import psutil

    budget = psutil.virtual_memory().available * AUTO_MEMORY_SHARE
    return max(1, min(AUTO_MAX_PARALLEL, int(budget // (kv_bytes_per_token(gguf) * n_ctx))))


class QueueFullError(AstraError):
    """The model's queue is full: the client should retry after a moment."""


class PromptTooLongError(AstraError):
    """The prompt does not fit the context window."""


class EmptyPromptError(AstraError):
    """The prompt encodes to no tokens, so there is nothing to continue."""


class UnknownTokenError(AstraError):
    """A request names a token id (logit_bias) outside the model's vocabulary."""


class ConversationRefusedError(AstraError):
    """The model's chat template refuses the conversation (e.g. roles out of order)."""


@dataclass
class Ticket:
    """A submitted job and the asyncio queue its events arrive on."""

    job: Job
    events: asyncio.Queue[tuple[str, Any]]


class LlamaEngine:
    """One loaded GGUF (plus optional LoRA adapter) with its scheduler thread."""

    def __init__(
        self,
        model: ServedModel,
        *,
        n_ctx: int,
        n_threads: int | None,
        max_queue: int,
        parallel: int = 1,
        batch_tokens: int = 512,
        on_step: Callable[[StepStats], None] | None = None,
    ):
        from astra_tune.models.gguf_meta import check_adapter_file

        started = time.perf_counter()
        if model.adapter is not None:
            check_adapter_file(model.adapter, model.gguf)
        self.n_threads = n_threads or os.cpu_count() or 1
        self.native = NativeModel(
            model.gguf,
            model.adapter,
            n_ctx=n_ctx,
            n_seq=parallel,
            n_batch=batch_tokens,
            n_threads=self.n_threads,
        )
        self.model = model
        self.n_ctx = n_ctx
        self.parallel = parallel
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        # `parallel` generating plus `max_queue` waiting: counted by permits, not by the
        # queue's own size, so a burst that arrives before the scheduler wakes is not
        # refused early.
        self.max_queue = max_queue
        self._permits = threading.BoundedSemaphore(max_queue + parallel)
        self.last_used = time.monotonic()
        self._template = (
            ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
                model.chat_template
            )
            if model.chat_template
            else None
        )
        self._go_template = GoChatTemplate(model.go_template) if model.go_template else None
        self.scheduler = Scheduler(
            self.native,
            load_seconds=self.load_seconds,
            on_step=on_step,
            name=f"engine-{model.name}",
        )

    # -- prompts --------------------------------------------------------------------------

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        """The conversation through the model's own chat template, ready for an answer."""
        try:
            return self._render(messages)
        except (jinja2.TemplateError, TemplateError, ValueError, TypeError) as exc:
            raise ConversationRefusedError(
                f"the model's chat template refuses this conversation: {exc}",
                fix="check the order and roles of the messages",
            ) from exc

    def _render(self, messages: list[dict[str, Any]]) -> str:
        if self._go_template is not None:
            return self._go_template.render(messages)
        if self._template is None:
            return "\n".join(str(m.get("content", "")) for m in messages) + "\n"

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        return self._template.render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=self.model.bos_token,
            eos_token=self.model.eos_token,
            raise_exception=raise_exception,
        )

    def tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        return self.native.tokenize(text, add_bos=add_bos)

    def check_fits(self, prompt: list[int], max_tokens: int | None) -> None:
        if not prompt:
            raise EmptyPromptError(
                "the prompt is empty: it encodes to no tokens",
                fix="send some text to continue",
            )
        if len(prompt) >= self.n_ctx:
            raise PromptTooLongError(
                f"the prompt has {len(prompt)} tokens but the context holds {self.n_ctx}",
                fix="shorten the prompt or start the server with a larger --n-ctx",
            )

    def check_bias(self, bias: dict[int, float]) -> None:
        """Refuse token ids past the vocabulary (llama.cpp would index past its logits)."""
        size = self.native.vocab_size
        outside = sorted(t for t in bias if t >= size)
        if outside:
            raise UnknownTokenError(
                f"logit_bias names token {outside[0]}, but the model has {size} tokens",
                fix=f"use token ids from 0 to {size - 1}",
            )

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalized embeddings, and the tokens they cost.

        A second llama.cpp context in embedding mode, made on first use: generation and
        embedding need different context settings in llama.cpp.
        """
        import llama_cpp

        with self._embed_lock:
            if self._embedder is None:
                with quiet_llama_logs():
                    self._embedder = llama_cpp.Llama(
                        model_path=str(self.model.gguf),
                        embedding=True,
                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        verbose=False,
                    )
            tokens = sum(len(self.tokenize(t, add_bos=True)) for t in texts)
            for text in texts:
                self.check_fits(self.tokenize(text, add_bos=True), None)
            vectors = self._embedder.embed(texts, normalize=True)
        return [list(map(float, v)) for v in vectors], tokens  # type: ignore[arg-type]

    # -- generation ------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if not self._permits.acquire(blocking=False):
            raise QueueFullError(
                f"{self.model.name} has {self.parallel} requests generating and "
                f"{self.max_queue} waiting",
                fix="retry after a moment",
            )

        def release() -> None:
            self._permits.release()
            self.last_used = time.monotonic()

        job.on_release = release
        self.scheduler.submit(job)

    @property
    def running(self) -> int:
        return self.scheduler.running

    @property
    def waiting(self) -> int:
        return self.scheduler.waiting

    def close(self) -> None:
        self.scheduler.close()
        self.native.close()
        if self._embedder is not None:
            self._embedder.close()


class EnginePool:
    """Loaded engines by `ServedModel.engine_key`: at most `max_loaded`, least recent out first."""

    def __init__(
        self,
        *,
        max_loaded: int,
        keep_alive: float,
        n_ctx: int,
        n_threads: int | None,
        max_queue: int,
        parallel: int | str = 1,
        batch_tokens: int = 512,
        on_step: Callable[[StepStats], None] | None = None,
    ) -> None:
        self.max_loaded = max_loaded
        self.parallel = parallel
        self.batch_tokens = batch_tokens
        self.on_step = on_step
        self.keep_alive = keep_alive
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_queue = max_queue
        self.engines: OrderedDict[str, LlamaEngine] = OrderedDict()
        self.expires: dict[str, float] = {}
        # Engine keys kept loaded until an epoch time, whatever keep-alive and the LRU
        # say: experiment arms and both sides of a rollout, so a switch (or a switch
        # back) never waits for a load. Replaced whole by the server on every reload.
        self.pins: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, model: ServedModel) -> LlamaEngine:
        with self._lock:
            key = model.engine_key
            engine = self.engines.get(key)
            if engine is None:
                self._make_room()
                # A Modelfile's PARAMETER num_ctx sizes that model's context, as in Ollama.
                n_ctx = int(model.params.get("num_ctx") or self.n_ctx)
                parallel = (
                    auto_parallel(model.gguf, n_ctx)
                    if self.parallel == "auto"
                    else int(self.parallel)
                )
                engine = LlamaEngine(
                    model,
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    max_queue=self.max_queue,
                    parallel=parallel,
                    batch_tokens=self.batch_tokens,
                    on_step=self.on_step,
                )
                self.engines[key] = engine
            self.engines.move_to_end(key)
            self.expires[key] = time.time() + self.keep_alive
            return engine

    def pinned(self, key: str, at: float | None = None) -> bool:
        return self.pins.get(key, 0.0) > (time.time() if at is None else at)

    def _make_room(self) -> None:
        while len(self.engines) >= self.max_loaded:
            idle = [n for n, e in self.engines.items()
                    if not e.running and not e.waiting and not self.pinned(n)]  # fmt: skip
            if not idle:
                # Everything is busy or pinned: go over the cap rather than fail the
                # request (pins are bounded: servers refuse experiments with more arms
                # than --max-loaded).
                break
            self.unload(idle[0])

    def unload(self, key: str) -> None:
        """Close the engine kept under `key` (a `ServedModel.engine_key`), if loaded."""
        engine = self.engines.pop(key, None)
        self.expires.pop(key, None)
        if engine is not None:
            engine.close()

    def reap(self) -> None:
        """Unload engines idle past their keep-alive."""
        with self._lock:
            now = time.time()
            for name in [n for n, t in self.expires.items() if t < now and not self.pinned(n, now)]:
                engine = self.engines[name]
                if not engine.running and not engine.waiting:
                    self.unload(name)

    def busy(self) -> int:
        return sum(e.running + e.waiting for e in self.engines.values())

    def close(self) -> None:
        with self._lock:
            for name in list(self.engines):
                self.unload(name)


def submit_job(
    engine: LlamaEngine,
    prompt: list[int],
    sampling: Sampling,
    on_done: Callable[[Finished], None] | None = None,
) -> Ticket:
    """Queue a generation now (QueueFullError and PromptTooLongError are raised here)."""
    engine.check_fits(prompt, sampling.max_tokens)
    engine.check_bias(sampling.logit_bias)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def emit(kind: str, value: object) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, value))

    job = Job(prompt=prompt, sampling=sampling, emit=emit, on_done=on_done)
    engine.submit(job)
    return Ticket(job, events)
