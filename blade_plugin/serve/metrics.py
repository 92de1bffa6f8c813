"""Prometheus metrics for `blade-bpo serve`, in the text exposition format (version 0.0.4).

`prometheus_client` is not a dependency of this project (nor of LLaMA-Factory), so the three metric
types the server needs are kept here: counters, gauges and fixed-bucket histograms with labels. All
updates take one lock, so the event loop and the small-model worker thread may both record.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, registry: Registry, name: str, help_text: str, labelnames: Sequence[str] = ()):
        self.name, self.help, self.labelnames = name, help_text, tuple(labelnames)
        self._lock = registry.lock
        registry.metrics.append(self)

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, registry, name, help_text, labelnames=()):
        super().__init__(registry, name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in sorted(self._values.items())]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, registry, name, help_text, labelnames=()):
        super().__init__(registry, name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in sorted(self._values.items())]


class Histogram(_Metric):
    """Cumulative buckets `le`, plus `_sum` and `_count`, as Prometheus expects."""

    kind = "histogram"

    def __init__(self, registry, name, help_text, buckets: Sequence[float], labelnames=()):
        super().__init__(registry, name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._values: dict[tuple[str, ...], list] = {}  # key -> [counts per bucket (not cumulative), sum]
        if not labelnames:
            self._values[()] = [[0] * len(self.buckets), 0.0]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        index = next(i for i, bound in enumerate(self.buckets) if value <= bound)
        with self._lock:
            counts, total = self._values.setdefault(key, [[0] * len(self.buckets), 0.0])
            counts[index] += 1
            self._values[key][1] = total + value

    def lines(self) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self._values.items()):
            running = 0
            for bound, count in zip(self.buckets, counts):
                running += count
                le = 'le="' + _number(bound) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {running}")
        return out


class Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: list[_Metric] = []

    def exposition(self) -> str:
        with self.lock:
            lines = []
            for metric in self.metrics:
                lines += metric.header() + metric.lines()
        return "\n".join(lines) + "\n"


class ServeMetrics:
    """Every metric `blade-bpo serve` exports (names prefixed `blade_serve_`)."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.requests = Counter(r, "blade_serve_requests_total", "HTTP requests by route and status code.",
                                ("route", "code"))
        self.errors = Counter(r, "blade_serve_errors_total",
                              "Failed requests by kind (auth, too_large, invalid, timeout, queue_full, upstream, "
                              "internal, client_left, shutdown).",
                              ("kind",))
        self.request_seconds = Histogram(r, "blade_serve_request_seconds",
                                         "Time from request start to the last byte sent, by route.",
                                         LATENCY_BUCKETS, ("route",))
        self.in_progress = Gauge(r, "blade_serve_requests_in_progress", "Requests being handled now.")
        self.knowledge_seconds = Histogram(r, "blade_serve_knowledge_seconds",
                                           "Time a request waited for its small-LM knowledge (queue + generation).",
                                           LATENCY_BUCKETS)
        self.retrieval_seconds = Histogram(r, "blade_serve_retrieval_seconds",
                                           "Time of one BM25 lookup of a request (--corpus), queue included.",
                                           LATENCY_BUCKETS)
        self.upstream_seconds = Histogram(r, "blade_serve_upstream_seconds",
                                          "Time until the upstream LLM answered (headers, for streams).",
                                          LATENCY_BUCKETS)
        self.batch_size = Histogram(r, "blade_serve_small_lm_batch_size",
                                    "Questions per small-LM generation (one batched forward pass each).",
                                    BATCH_BUCKETS)
        self.batch_seconds = Histogram(r, "blade_serve_small_lm_batch_seconds",
                                       "Wall time of one small-LM batched generation.", LATENCY_BUCKETS)
        self.queue_depth = Gauge(r, "blade_serve_small_lm_queue_depth",
                                 "Distinct questions waiting for or in small-LM generation.")
        self.cache = Counter(r, "blade_serve_knowledge_cache_total",
                             "Knowledge lookups by result (hit, miss; a miss joining an identical in-flight "
                             "question counts as shared).", ("result",))
        self.upstream_tokens = Counter(r, "blade_serve_upstream_tokens_total",
                                       "Tokens the upstream LLM reported in `usage`, by kind.", ("kind",))
        self.upstream_cost = Counter(r, "blade_serve_upstream_cost_dollars_total",
                                     "US dollars the upstream tokens cost at --price-input/--price-output "
                                     "(stays 0 without prices).")
        for result in ("hit", "miss", "shared"):
            self.cache.inc(0, result=result)
        for kind in ("prompt", "completion"):
            self.upstream_tokens.inc(0, kind=kind)
