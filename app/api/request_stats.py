"""Request rate and latency percentiles of this process, read from its own Prometheus metrics.

Percentiles are estimated from the latency histogram's buckets by linear interpolation within a bucket,
as Prometheus' histogram_quantile does. The rate and percentiles cover a window: the difference between
now and a reading kept from about a minute ago (readings are kept at most every few seconds, when asked).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from prometheus_client import REGISTRY

from app.serving.metrics import LATENCY, LATENCY_BUCKETS, REQUESTS

BOUNDS = np.array([*LATENCY_BUCKETS, np.inf])  # [B] upper bounds, the last +Inf
# Route templates that are not API calls: pages, docs, probes and scrapes.
NOT_API = ("/", "/console", "/docs", "/docs/assets", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
           "/healthz", "/readyz", "/metrics", "<unmatched>")  # fmt: skip
KEEP_EVERY_S = 5.0
WINDOW_S = 60.0
HORIZON_S = 600.0


@dataclass(frozen=True)
class Reading:
    t: float
    requests: float
    buckets: np.ndarray  # [B] cumulative counts of API requests at each bound


@dataclass(frozen=True)
class RouteRow:
    route: str
    method: str
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


def quantile(q: float, cumulative: np.ndarray) -> float | None:
    """The q-quantile in seconds of a histogram given as cumulative counts at BOUNDS; None when empty."""
    total = float(cumulative[-1])
    if total <= 0:
        return None
    rank = q * total
    i = int(np.searchsorted(cumulative, rank, side="left"))
    if i >= len(BOUNDS) - 1:  # in the +Inf bucket: the largest finite bound, as Prometheus answers
        return float(BOUNDS[-2])
    lower = float(BOUNDS[i - 1]) if i > 0 else 0.0
    below = float(cumulative[i - 1]) if i > 0 else 0.0
    inside = float(cumulative[i]) - below
    return lower + (float(BOUNDS[i]) - lower) * ((rank - below) / inside if inside > 0 else 1.0)


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def read() -> tuple[Reading, list[RouteRow]]:
    """The API's totals now, and each API route's counts and percentiles since the process started."""
    requests: dict[tuple[str, str], list[float]] = {}  # (route, method) -> [requests, 5xx]
    for metric in REQUESTS.collect():
        for s in metric.samples:
            if s.name.endswith("_total"):
                row = requests.setdefault((s.labels["route"], s.labels["method"]), [0.0, 0.0])
                row[0] += s.value
                row[1] += s.value if s.labels["status"].startswith("5") else 0.0
    buckets: dict[tuple[str, str], np.ndarray] = {}
    for metric in LATENCY.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                key = (s.labels["route"], s.labels["method"])
                counts = buckets.setdefault(key, np.zeros(len(BOUNDS)))
                counts[int(np.searchsorted(BOUNDS, float(s.labels["le"])))] = s.value
    rows, total, cumulative = [], 0.0, np.zeros(len(BOUNDS))
    for (route, method), (n, errors) in requests.items():
        hist = buckets.get((route, method), np.zeros(len(BOUNDS)))
        if route in NOT_API:
            continue
        total += n
        cumulative += hist
        rows.append(RouteRow(route, method, int(n), int(errors), ms(quantile(0.5, hist)), ms(quantile(0.99, hist))))
    rows.sort(key=lambda r: (-r.requests, r.route))
    return Reading(time.time(), total, cumulative), rows


class Window:
    """Readings of the last HORIZON_S, kept at most every KEEP_EVERY_S; the baseline is the newest one at
    least WINDOW_S old (else the oldest)."""

    def __init__(self) -> None:
        self._readings: deque[Reading] = deque()
        self._lock = threading.Lock()

    def observe(self, now: Reading) -> Reading | None:
        """Keep ``now`` and return the reading to measure it against (None on the first call)."""
        with self._lock:
            while len(self._readings) > 1 and now.t - self._readings[1].t > HORIZON_S:
                self._readings.popleft()
            old = [r for r in self._readings if now.t - r.t >= WINDOW_S]
            base = old[-1] if old else (self._readings[0] if self._readings else None)
            if not self._readings or now.t - self._readings[-1].t >= KEEP_EVERY_S:
                self._readings.append(now)
            return base


WINDOW = Window()  # the metrics are the process's, so is their window


def process_start() -> float:
    """Unix time this process started (prometheus-client's process collector on Linux), else the import time."""
    return REGISTRY.get_sample_value("process_start_time_seconds") or _IMPORTED


_IMPORTED = time.time()
