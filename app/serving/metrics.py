"""Prometheus metrics of the serving process: requests and latency by route, inference time by model,
the loaded versions, and how recommendation lists were made.

Each API process keeps its own counters (the default registry); with several uvicorn workers set
PROMETHEUS_MULTIPROC_DIR to aggregate them, as prometheus-client documents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter("deeprec_http_requests", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])  # fmt: skip
LATENCY = Histogram("deeprec_http_request_duration_seconds", "HTTP request latency by route template",
                    ["route", "method"], buckets=LATENCY_BUCKETS)  # fmt: skip
INFERENCE = Histogram("deeprec_inference_seconds", "Model forward pass + top-N time by model",
                      ["model"], buckets=LATENCY_BUCKETS)  # fmt: skip
LOADED = Gauge("deeprec_model_loaded", "1 for each loaded model version", ["model", "version", "device"])
STRATEGY = Counter("deeprec_recommendation_strategy", "Recommendation lists by strategy", ["strategy"])
CACHE_REQUESTS = Counter("deeprec_recommendation_cache", "Look-ups in this process's cache of users' ranked "
                         "candidates", ["result"])  # fmt: skip
CACHE_ENTRIES = Gauge("deeprec_recommendation_cache_entries", "Entries in this process's cache of ranked candidates")
RESPONSE_CACHE = Counter("deeprec_response_cache", "Look-ups of GET list requests in this process's cache of whole "
                         "answers (app.api.response_cache)", ["result"])  # fmt: skip
RESPONSE_CACHE_ENTRIES = Gauge("deeprec_response_cache_entries", "Answers in this process's response cache")
PROCESS = Gauge("deeprec_process", "1, labelled with the id of the API process that answered this scrape (each "
                "keeps its own counters unless PROMETHEUS_MULTIPROC_DIR is set)", ["pid"])  # fmt: skip


@contextmanager
def inference_timer(model: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        INFERENCE.labels(model).observe(time.perf_counter() - t0)


def set_loaded(versions: Mapping[str, tuple[str, str]]) -> None:
    """Replace the loaded-version gauge with ``{model: (version, device)}``."""
    LOADED.clear()
    for model, (version, device) in versions.items():
        LOADED.labels(model, version, device).set(1)


def mark_process() -> None:
    """Label this process's scrapes with its id (call in each API process: uvicorn workers are forked)."""
    PROCESS.clear()
    PROCESS.labels(str(os.getpid())).set(1)
