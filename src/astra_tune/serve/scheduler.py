"""Continuous batching: one thread per loaded model decodes every running sequence at once.

Each step builds one batch: the last sampled token of every generating sequence, then
prompt tokens of sequences still reading theirs (up to the batch budget, so a long
prompt delays running streams by one chunk at most), one `llama_decode`, then each
sequence samples from its own row with its own sampler chain. A request joins at the next
step after a slot frees up, not after the batch drains: llama.cpp's server slot loop and
vLLM's scheduler work the same way.

A slot keeps the tokens of its last request in the KV cache; a new request goes to the
free slot whose cache shares the longest prefix with its prompt (same system prompt, a
chat that continues), and only the rest of its prompt is evaluated.

Seeds: a sampled text depends on the logits, and llama.cpp's kernels give slightly
different logits for the same position in batches of different shapes. The same request
with the same seed repeats its text exactly when it runs alone on the same cache state,
as in llama.cpp's own server; beside other requests, a near-tie may flip.
"""

from __future__ import annotations

import codecs
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from astra_tune.errors import AstraError
from astra_tune.serve.native import NativeModel, Sampler
from astra_tune.serve.sampling import Sampling

log = logging.getLogger(__name__)

IDLE_POLL = 0.5  # seconds the idle loop waits for a request before looking at `closing`


class EngineError(AstraError):
    """llama.cpp failed on a request that passed every check: a bug to report, not a
    reason to drop the connection. The traceback is logged by the scheduler."""


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
    cached_tokens: int = 0  # prompt tokens reused from the KV cache, not evaluated
    tokens: list[int] = field(default_factory=list)  # the generated token ids
    queue_seconds: float = 0.0  # from queued to given a slot


@dataclass
class Job:
    """One generation request and how its tokens get back to the caller.

    `emit(kind, value)` is called on the scheduler thread with ("token", text),
    ("done", Finished) or ("error", AstraError); it must not block.
    """

    prompt: list[int]
    sampling: Sampling
    emit: Callable[[str, object], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    # Called when the job ends, however it ends (the client may be gone by then).
    on_done: Callable[[Finished], None] | None = None
    # Called once when the job leaves the scheduler, finished or failed.
    on_release: Callable[[], None] | None = None


@dataclass
class StepStats:
    """What one decode step held (for metrics)."""

    rows: int
    generating: int  # sequences that sampled their next token (the rest: prompts)


class Slot:
    """One sequence of the context: the request it serves and what its cache holds."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.cached: list[int] = []  # tokens whose K/V are in the cache, in order
        self.job: Job | None = None
        self.sampler: Sampler | None = None
        self.todo: list[int] = []  # prompt tokens still to evaluate
        self.next_token: int | None = None  # sampled, not yet in the cache
        self.generated: list[int] = []
        self.reused = 0
        self.first_token: float | None = None
        self.assigned_at = 0.0
        self.max_tokens = 0
        self.held = ""  # decoded text not sent yet: it may be the start of a stop string
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.last_used = 0.0

    @property
    def busy(self) -> bool:
        return self.job is not None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    keep = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:size]):
                keep = size
                break
    return keep


class Scheduler:
    """Owns a NativeModel's context on one thread; `submit` may be called from any thread."""

    def __init__(
        self,
        native: NativeModel,
        *,
        load_seconds: float,
        on_step: Callable[[StepStats], None] | None = None,
        name: str = "engine",
    ) -> None:
        self.native = native
        self.load_seconds = load_seconds
        self.on_step = on_step
        self.slots = [Slot(i) for i in range(native.n_seq)]
        self.pending: queue.Queue[Job | None] = queue.Queue()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.pending.put_nowait(job)

    @property
    def running(self) -> int:
        """Slots serving a request now."""
        return sum(slot.busy for slot in self.slots)

    @property
    def waiting(self) -> int:
        return self.pending.qsize()

    def close(self) -> None:
        self._closing = True
        self.pending.put(None)
        self._thread.join(timeout=30)

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._admit()
                if not self.running:
                    try:
                        job = self.pending.get(timeout=IDLE_POLL)
                    except queue.Empty:
                        continue  # idle: look at `_closing` again
                    if job is not None:
                        self._assign(job)
                    continue
                self._step()
            except Exception as exc:  # a bug: fail the requests in flight, keep serving
                log.exception("llama.cpp failed in a decode step")
                self._fail_all(exc)
        for slot in self.slots:
            if slot.job is not None:
                self._finish(slot, "cancelled")

    def _admit(self) -> None:
        while any(not s.busy for s in self.slots):
            try:
                job = self.pending.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self._assign(job)

    def _assign(self, job: Job) -> None:
        if job.cancel.is_set():
            job_done(job, self._finished_record(job, "cancelled", [], None, 0, 0.0))
            return
        free = [s for s in self.slots if not s.busy]
        # The longest shared prefix wins; among equals, the slot idle longest.
        slot = max(free, key=lambda s: (common_prefix(s.cached, job.prompt), -s.last_used))
        reuse = common_prefix(slot.cached, job.prompt)
        reuse = min(reuse, len(job.prompt) - 1)  # the last prompt token must give logits
        self.native.forget(slot.seq, reuse)
        slot.cached = slot.cached[:reuse]
        slot.todo = job.prompt[reuse:]
        slot.reused = reuse
        slot.job = job
        slot.sampler = self.native.sampler(job.sampling)
        slot.next_token = None
        slot.generated = []
        slot.first_token = None
        slot.assigned_at = time.perf_counter()
        room = self.native.n_ctx - len(job.prompt)
        asked = job.sampling.max_tokens
        slot.max_tokens = min(asked or room, room)
        slot.held = ""
        slot.decoder.reset()

    def _step(self) -> None:
        native = self.native
        native.clear_batch()
        rows: list[tuple[Slot, int]] = []  # slots that sample this step, and their row
        for slot in self.slots:
            if slot.job is not None and slot.job.cancel.is_set():
                self._finish(slot, "cancelled")
        generating = 0
        for slot in self.slots:
            if slot.job is not None and slot.next_token is not None:
                row = native.add(slot.next_token, len(slot.cached), slot.seq, True)
                slot.cached.append(slot.next_token)
                slot.next_token = None
                rows.append((slot, row))
                generating += 1
        budget = native.n_batch - native.rows
        for slot in self.slots:
            if slot.job is None or not slot.todo or budget <= 0:
                continue
            chunk, slot.todo = slot.todo[:budget], slot.todo[budget:]
            for index, token in enumerate(chunk):
                last = not slot.todo and index == len(chunk) - 1
                row = native.add(token, len(slot.cached), slot.seq, last)
                slot.cached.append(token)
                if last:
                    rows.append((slot, row))
            budget -= len(chunk)
        if native.rows == 0:
            return
        native.decode()
        if self.on_step is not None:
            self.on_step(StepStats(native.rows, generating))
        for slot, row in rows:
            self._sampled(slot, row)

    def _sampled(self, slot: Slot, row: int) -> None:
        assert slot.sampler is not None
        assert slot.job is not None
        token = slot.sampler.sample(row)
        if self.native.is_end(token):
            self._finish(slot, "stop")
            return
        slot.generated.append(token)
        if slot.first_token is None:
            slot.first_token = time.perf_counter()
        slot.held += slot.decoder.decode(self.native.piece(token))
        stops = slot.job.sampling.stop
        for stop in stops:
            at = slot.held.find(stop)
            if at >= 0:
                slot.held = slot.held[:at]  # what follows the stop string is never sent
                slot.decoder.reset()
                self._finish(slot, "stop")
                return
        keep = held_back(slot.held, stops)
        ready = slot.held[: len(slot.held) - keep]
        if ready:
            slot.job.emit("token", ready)
            slot.held = slot.held[len(ready) :]
        if len(slot.generated) >= slot.max_tokens:
            self._finish(slot, "length")
            return
        slot.next_token = token

    def _finish(self, slot: Slot, reason: str) -> None:
        job = slot.job
        assert job is not None
        if reason != "cancelled":
            tail = slot.held + slot.decoder.decode(b"", final=True)
            if tail:
                job.emit("token", tail)
        else:
            # A cancelled request's cache is not worth keeping: free its cells at once.
            self.native.forget(slot.seq)
            slot.cached = []
        done = self._finished_record(
            job, reason, slot.generated, slot.first_token, slot.reused, slot.assigned_at
        )
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.next_token, slot.todo = None, None, None, []
        slot.last_used = time.perf_counter()
        job_done(job, done)

    def _finished_record(
        self,
        job: Job,
        reason: str,
        tokens: list[int],
        first: float | None,
        reused: int,
        assigned: float,
    ) -> Finished:
        return Finished(
            finish_reason=reason,
            prompt_tokens=len(job.prompt),
            completion_tokens=len(tokens),
            started=job.queued_at,
            first_token=first,
            ended=time.perf_counter(),
            load_seconds=self.load_seconds,
            cached_tokens=reused,
            tokens=list(tokens),
            queue_seconds=max(0.0, (assigned or time.perf_counter()) - job.queued_at),
        )

    def _fail_all(self, exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, AstraError)
            else EngineError(f"the engine failed on this request: {exc!r}")
        )
        for slot in self.slots:
            if slot.job is not None:
                job = slot.job
                self.native.forget(slot.seq)
                slot.cached, slot.job, slot.next_token, slot.todo = [], None, None, []
                if slot.sampler is not None:
                    slot.sampler.close()
                    slot.sampler = None
                if job.on_release is not None:
                    job.on_release()
                job.emit("error", error)


def job_done(job: Job, done: Finished) -> None:
    if job.on_release is not None:
        job.on_release()
    if job.on_done is not None:
        job.on_done(done)
    job.emit("done", done)
