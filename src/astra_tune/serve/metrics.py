"""Prometheus metrics, named after vLLM's (with our `astra:` prefix) where vLLM has one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from astra_tune.serve.engine import EnginePool, Finished
from astra_tune.serve.scheduler import StepStats

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5)


class ServerMetrics:
    """One server's metrics, in their own registry (tests run several servers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        r = self.registry
        self.requests = Counter(
            "astra:requests", "HTTP requests by route and status.", ("route", "status"), registry=r
        )
        self.success = Counter(
            "astra:request_success",
            "Finished generations by finish reason.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.errors = Counter("astra:errors", "Errors by type.", ("type",), registry=r)
        self.assignments = Counter(
            "astra:experiment_assignments",
            "Requests routed by an experiment, by experiment, arm, version and unit kind.",
            ("experiment", "arm", "version", "unit"),
            registry=r,
        )
        self.feedback = Counter(
            "astra:feedback",
            "Ratings received, by experiment, arm, version and rating (up, down).",
            ("experiment", "arm", "version", "rating"),
            registry=r,
        )
        self.registry_reloads = Counter(
            "astra:registry_reloads",
            "Catalog reloads after the registry changed, by outcome (changed, error).",
            ("outcome",),
            registry=r,
        )
        self.auth_failures = Counter(
            "astra:auth_failures", "Requests refused for a missing or wrong API key.", registry=r
        )
        self.ttft = Histogram(
            "astra:time_to_first_token_seconds",
            "Time from request to first token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "astra:e2e_request_latency_seconds",
            "Time from request to last token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "astra:time_per_output_token_seconds",
            "Mean time between output tokens of a request.",
            labels,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "astra:prompt_tokens", "Prompt tokens processed.", labels, registry=r
        )
        self.generation_tokens = Counter(
            "astra:generation_tokens", "Tokens generated.", labels, registry=r
        )
        self.running = Gauge(
            "astra:num_requests_running", "Requests generating now.", labels, registry=r
        )
        self.waiting = Gauge(
            "astra:num_requests_waiting", "Requests queued for a model.", labels, registry=r
        )
        self.loaded = Gauge("astra:loaded_models", "Models loaded in memory.", registry=r)
        self.cached_tokens = Counter(
            "astra:prompt_tokens_cached",
            "Prompt tokens reused from the KV cache instead of evaluated.",
            labels,
            registry=r,
        )
        self.queue_time = Histogram(
            "astra:request_queue_time_seconds",
            "Time a request waited for a free slot.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "astra:batch_tokens",
            "Tokens in each decode step (generating sequences plus prompt chunks).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_sequences = Histogram(
            "astra:batch_generating_sequences",
            "Sequences generating a token in each decode step.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.slots = Gauge(
            "astra:slots_total", "Sequences a loaded model can decode together.", labels, registry=r
        )

    def observe(self, model: str, version: str, done: Finished) -> None:
        self.success.labels(model, version, done.finish_reason).inc()
        self.prompt_tokens.labels(model, version).inc(done.prompt_tokens)
        self.generation_tokens.labels(model, version).inc(done.completion_tokens)
        self.cached_tokens.labels(model, version).inc(done.cached_tokens)
        self.queue_time.labels(model, version).observe(done.queue_seconds)
        self.e2e.labels(model, version).observe(done.ended - done.started)
        if done.first_token is not None:
            self.ttft.labels(model, version).observe(done.first_token - done.started)
            if done.completion_tokens > 1:
                per_token = (done.ended - done.first_token) / (done.completion_tokens - 1)
                self.tpot.labels(model, version).observe(per_token)

    def observe_step(self, step: StepStats) -> None:
        """One decode step (called on an engine's scheduler thread)."""
        self.batch_rows.observe(step.rows)
        self.batch_sequences.observe(step.generating)

    def render(self, pool: EnginePool) -> bytes:
        self.loaded.set(len(pool.engines))
        for engine in list(pool.engines.values()):
            labels = (engine.model.name, engine.model.version)
            self.running.labels(*labels).set(engine.running)
            self.waiting.labels(*labels).set(engine.waiting)
            self.slots.labels(*labels).set(engine.parallel)
        return generate_latest(self.registry)
