"""Prometheus metrics with the `retro_` prefix, in a registry of their own per app.

A registry per app keeps two apps in one process (tests) from sharing counters. This module owns
the metric definitions and the ASGI middleware that counts requests by route template (never by
raw path, which would let clients create unbounded label values).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "retro_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "retro_request_latency_seconds",
            "time from request to the end of its response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens_generated = Counter(
            "retro_tokens_generated", "completion tokens sampled", ["model"], registry=r
        )
        self.prompt_tokens = Counter("retro_prompt_tokens", "prompt tokens processed", ["model"], registry=r)
        self.generation_latency = Histogram(
            "retro_generation_latency_seconds",
            "model time per completion (queue wait excluded)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.generations_cancelled = Counter(
            "retro_generations_cancelled",
            "generations stopped because the client went away",
            ["model"],
            registry=r,
        )
        self.retrieval_latency = Histogram(
            "retro_retrieval_latency_seconds",
            "one retrieval call (encode + search)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "retro_queue_depth", "requests queued or running per model", ["model"], registry=r
        )
        self.requests_running = Gauge(
            "retro_requests_running",
            "requests generating now per model (the running batch)",
            ["model"],
            registry=r,
        )
        self.batch_size = Histogram(
            "retro_batch_size",
            "rows decoded together per batched decode step (continuous batching)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "retro_queue_wait_seconds",
            "time a request waited for a running slot before its generation started",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.index_documents = Gauge("retro_index_documents", "documents in the serving index", registry=r)
        self.index_chunks = Gauge("retro_index_chunks", "chunks in the serving index", registry=r)
        self.documents_added = Counter("retro_documents_added", "documents added through the API", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and its latency by method, route template and status."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status["code"])).inc()
            self.metrics.request_latency.labels(method, template).observe(time.perf_counter() - started)
