"""Prometheus metrics for /metrics: requests by route and status, latency and RTF, queue, memory, ready.

Each service has its own registry (several services may live in one test process).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)
UI_PREFIX = "/gradio_api/"
# Label values come from closed sets, so that no request can add series: a method outside HTTP's own is "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
UNMATCHED_ROUTE = "unmatched"  # the name of the route that answers unknown /v1 paths (glmtts.http.errors): labelled OTHER


class Metrics:
    """The service's metrics; gauges read their values when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("glmtts_http_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "glmtts_http_request_seconds",
            "HTTP request time to the last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rtf = Histogram(
            "glmtts_synthesis_rtf", "Synthesis time / audio duration", buckets=RTF_BUCKETS, registry=self.registry
        )
        self.first_audio = Histogram(
            "glmtts_first_audio_seconds", "Time from request to its first audio", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.audio_seconds = Counter("glmtts_audio_seconds", "Seconds of audio synthesized", registry=self.registry)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value `read` gives at each scrape."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def labelled_gauge(self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        """A gauge per key of what `read` gives at each scrape (memory by kind, say)."""
        self.registry.register(_LabelledReading(name, documentation, label, read))

    def observe_synthesis(self, total_s: float, audio_s: float, first_audio_s: float | None = None) -> None:
        if audio_s > 0:
            self.rtf.observe(total_s / audio_s)
            self.audio_seconds.inc(audio_s)
        if first_audio_s is not None:
            self.first_audio.observe(first_audio_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LabelledReading:
    """A collector that reads a dict of values when scraped."""

    def __init__(self, name: str, documentation: str, label: str, read: Callable[[], dict[str, float]]):
        self.name, self.documentation, self.label, self.read = name, documentation, label, read

    def collect(self):
        family = GaugeMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, value in self.read().items():
            family.add_metric([key], value)
        yield family


def route_label(scope: Scope) -> str:
    """A low-cardinality name for a request: its route template, the UI as one, else "other"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path and getattr(route, "name", None) != UNMATCHED_ROUTE:
        return path
    return "ui" if scope.get("path", "").startswith(UI_PREFIX) or scope.get("path") == "/" else OTHER


def method_label(scope: Scope) -> str:
    method = scope.get("method", "")
    return method if method in METHODS else OTHER


def status_label(status: int) -> str:
    return str(status) if 100 <= status <= 599 else OTHER


class MetricsMiddleware:
    """Counts every HTTP request by route and status and times it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            route = route_label(scope)
            self.metrics.requests.labels(route, method_label(scope), status_label(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
