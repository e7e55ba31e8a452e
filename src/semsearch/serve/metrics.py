"""Prometheus metrics for the HTTP service: request counts by route and status, a latency histogram, index size.

Each app has its own registry (no module-level state). With several server workers, prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``semsearch serve``) aggregates across processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..index.manifest import IndexManifest

_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _IndexCollector(Collector):
    def __init__(self, manifest: IndexManifest | None) -> None:
        self.manifest = manifest

    def collect(self) -> Iterator[Metric]:
        m = self.manifest
        passages = GaugeMetricFamily("semsearch_index_passages", "Passages in the loaded index version")
        articles = GaugeMetricFamily("semsearch_index_articles", "Articles in the loaded index version")
        info = GaugeMetricFamily("semsearch_index_info", "Loaded index version", labels=["version", "model"])
        if m is not None:
            passages.add_metric([], m.passages)
            articles.add_metric([], m.articles)
            info.add_metric([m.version_id, m.model_id], 1)
        yield from (passages, articles, info)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "semsearch_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "semsearch_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self, manifest: IndexManifest | None) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus_client's own convention
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_Forward(self.registry))
        registry.register(_IndexCollector(manifest))
        return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
