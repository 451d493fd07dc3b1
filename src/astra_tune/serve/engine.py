"""llama.cpp engines: one worker thread and a bounded queue per loaded model, in an LRU pool.

llama.cpp contexts are not thread-safe and decode one sequence at a time here, so each
loaded model has exactly one worker; requests wait in a bounded queue and the server
answers 429 when it is full, instead of piling up latency. Tokens travel to the asyncio
side through `loop.call_soon_threadsafe`; a cancelled request stops between two tokens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from astra_tune.errors import AstraError, ModelError
from astra_tune.ollama.gotemplate import TemplateError
from astra_tune.ollama.render import GoChatTemplate
from astra_tune.progress import quiet_llama_logs
from astra_tune.serve.catalog import ServedModel
from astra_tune.serve.sampling import Sampling

log = logging.getLogger(__name__)


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


class EngineError(AstraError):
    """llama.cpp failed on a request that passed every check: a bug to report, not a
    reason to drop the connection. The traceback is logged by the worker."""


@dataclass
class Finished:
    """The end of one generation: why it stopped and what it cost."""

    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    started: float  # time.perf_counter() when the request was queued
    first_token: float | None
    ended: float
    load_seconds: float


@dataclass
class Job:
    """One queued generation and the channel its tokens come back on."""

    prompt: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]]
    cancel: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    # Called on the worker thread when the job ends, however it ends (the client may be
    # gone by then, so the async side cannot be the one to count it).
    on_done: Callable[[Finished], None] | None = None


class LlamaEngine:
    """One loaded GGUF (plus optional LoRA adapter) with its worker thread."""

    def __init__(self, model: ServedModel, *, n_ctx: int, n_threads: int | None, max_queue: int):
        from llama_cpp import Llama

        from astra_tune.models.gguf_meta import check_adapter_file

        started = time.perf_counter()
        if model.adapter is not None:
            check_adapter_file(model.adapter, model.gguf)
        try:
            with quiet_llama_logs():
                self.llm = Llama(
                    model_path=str(model.gguf),
                    lora_path=str(model.adapter) if model.adapter else None,
                    n_ctx=n_ctx,
                    n_threads=n_threads or os.cpu_count() or 1,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {model.gguf.name}: {exc}") from exc
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self._embedder: Any = None
        self._embed_lock = threading.Lock()
        self.load_seconds = time.perf_counter() - started
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        # One running plus `max_queue` waiting: counted by slots, not by the queue's own
        # size, so a burst that arrives before the worker wakes is not refused early.
        self.max_queue = max_queue
        self._slots = threading.BoundedSemaphore(max_queue + 1)
        self.running = 0
        self.last_used = time.monotonic()
        self._template = (
            ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
                model.chat_template
            )
            if model.chat_template
            else None
        )
        self._go_template = GoChatTemplate(model.go_template) if model.go_template else None
        self._worker = threading.Thread(target=self._work, name=f"engine-{model.name}", daemon=True)
        self._worker.start()

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
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

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
        size = self.llm.n_vocab()
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
        if not self._slots.acquire(blocking=False):
            raise QueueFullError(
                f"{self.model.name} has {self.max_queue} requests waiting",
                fix="retry after a moment",
            )
        self.jobs.put_nowait(job)

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def close(self) -> None:
        self.jobs.put(None)
        self._worker.join(timeout=30)
        self.llm.close()
        if self._embedder is not None:
            self._embedder.close()

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self.running = 1
            try:
                self._generate(job)
            except AstraError as exc:  # the client gets the error; the worker keeps serving
                job.loop.call_soon_threadsafe(job.events.put_nowait, ("error", exc))
            except Exception as exc:
                log.exception("llama.cpp failed on a request to %s", self.model.name)
                error = EngineError(f"the engine failed on this request: {exc!r}")
                job.loop.call_soon_threadsafe(job.events.put_nowait, ("error", error))
            finally:
                self.running = 0
                self.last_used = time.monotonic()
                self._slots.release()

    def _generate(self, job: Job) -> None:
        if job.cancel.is_set():
            job.loop.call_soon_threadsafe(
                job.events.put_nowait, ("done", self._finished(job, "cancelled", 0, None))
            )
            return
        sampling = job.sampling
        grammar = None
        if sampling.json_mode:
            from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

            grammar = LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        room = self.n_ctx - len(job.prompt)
        max_tokens = min(sampling.max_tokens or room, room)
        stream = self.llm.create_completion(
            prompt=job.prompt,
            max_tokens=max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            seed=sampling.seed,
            stop=sampling.stop or None,
            grammar=grammar,
            logit_bias=sampling.logit_bias or None,
            stream=True,
        )
        count = 0
        first: float | None = None
        reason = "length"
        for chunk in stream:
            choice = chunk["choices"][0]  # type: ignore[index]
            text = choice.get("text") or ""
            if text:
                count += 1
                if first is None:
                    first = time.perf_counter()
                job.loop.call_soon_threadsafe(job.events.put_nowait, ("token", text))
            if choice.get("finish_reason"):
                reason = choice["finish_reason"]
            if job.cancel.is_set():
                reason = "cancelled"
                stream.close()  # type: ignore[union-attr]
                break
        self._finish(job, self._finished(job, reason, count, first))

    def _finish(self, job: Job, done: Finished) -> None:
        if job.on_done is not None:
            job.on_done(done)
        job.loop.call_soon_threadsafe(job.events.put_nowait, ("done", done))

    def _finished(self, job: Job, reason: str, count: int, first: float | None) -> Finished:
        return Finished(
            finish_reason=reason,
            prompt_tokens=len(job.prompt),
            completion_tokens=count,
            started=job.queued_at,
            first_token=first,
            ended=time.perf_counter(),
            load_seconds=self.load_seconds,
        )


class EnginePool:
    """Loaded engines by model name: at most `max_loaded`, least recently used goes first."""

    def __init__(
        self,
        *,
        max_loaded: int,
        keep_alive: float,
        n_ctx: int,
        n_threads: int | None,
        max_queue: int,
    ) -> None:
        self.max_loaded = max_loaded
        self.keep_alive = keep_alive
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_queue = max_queue
        self.engines: OrderedDict[str, LlamaEngine] = OrderedDict()
        self.expires: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, model: ServedModel) -> LlamaEngine:
        with self._lock:
            engine = self.engines.get(model.name)
            if engine is None:
                self._make_room()
                # A Modelfile's PARAMETER num_ctx sizes that model's context, as in Ollama.
                n_ctx = int(model.params.get("num_ctx") or self.n_ctx)
                engine = LlamaEngine(
                    model, n_ctx=n_ctx, n_threads=self.n_threads, max_queue=self.max_queue
                )
                self.engines[model.name] = engine
            self.engines.move_to_end(model.name)
            self.expires[model.name] = time.time() + self.keep_alive
            return engine

    def _make_room(self) -> None:
        while len(self.engines) >= self.max_loaded:
            idle = [n for n, e in self.engines.items() if not e.running and not e.waiting]
            if not idle:
                break  # everything is busy: go over the cap rather than fail the request
            self.unload(idle[0])

    def unload(self, name: str) -> None:
        engine = self.engines.pop(name, None)
        self.expires.pop(name, None)
        if engine is not None:
            engine.close()

    def reap(self) -> None:
        """Unload engines idle past their keep-alive."""
        with self._lock:
            now = time.time()
            for name in [n for n, t in self.expires.items() if t < now]:
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
) -> Job:
    """Queue a generation now (QueueFullError and PromptTooLongError are raised here)."""
    engine.check_fits(prompt, sampling.max_tokens)
    engine.check_bias(sampling.logit_bias)
    job = Job(
        prompt=prompt,
        sampling=sampling,
        loop=asyncio.get_running_loop(),
        events=asyncio.Queue(),
        on_done=on_done,
    )
    engine.submit(job)
    return job
