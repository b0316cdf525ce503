"""The first start: quick models trained in the foreground, the rest of the set as one background job.

`deeprec train --model default --if-missing --quick-first` (what `make run` calls) trains the quick
models of the set that have no version yet (:data:`QUICK`: popularity, and MF capped at
``QUICK_PARAMS``), then queues every other model as one job with trigger :data:`TRIGGER`. A worker
runs that job like any other, except that:

- the models whose quick version is their full one (:data:`REUSED`: popularity) are taken from
  their active versions when those were trained on the same snapshot, not trained again;
- each version is published (and so served) as soon as it is trained, instead of all at the end:
  MF at full quality first, then EASE, GRU4Rec, content, the hybrid (the default model for
  recommendations) and last the rating stack ``hybrid-rating`` when the data has ratings.

:class:`JobClock` turns a job's progress events into the models left and an estimated time to
finish, for the job's progress row (the console, ``GET /v1/jobs``) and the worker's log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

TRIGGER = "first-run"
QUICK = ("popularity", "mf")
# The quick MF stops after the epoch that ends past this budget (at least one epoch), with one
# negative per event (an epoch costs 2/5 of the default 4): personalized within seconds; the job then
# trains MF in full, and that version replaces it.
QUICK_PARAMS: dict[str, dict[str, Any]] = {"mf": {"max_seconds": 5.0, "num_negatives": 1}}
REUSED = ("popularity",)  # closed-form: its quick version is the full one

# Seconds each default model took in the first-run job on the demo data (2,000 users, 1,500 items,
# 100k events) on the shared 2-core machine (BENCHMARKS.md "First start"); only their ratios matter:
# the clock rescales them by how fast the models done so far actually ran.
TYPICAL_S: dict[str, float] = {
    "popularity": 1.0, "mf": 450.0, "ease": 1.0, "gru4rec": 275.0, "content": 125.0, "hybrid": 26.0,
    "hybrid-rating": 220.0,  # with its own rating members (mf, content, gmf on ratings)
}  # fmt: skip
UNKNOWN_S = 60.0


def quick_params(names: Sequence[str], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` with the quick caps of ``names`` added; a cap the caller set explicitly wins."""
    out = dict(params or {})
    for name in names:
        caps = QUICK_PARAMS.get(name)
        if caps:
            own = out.get(name)
            out[name] = {**caps, **(own if isinstance(own, Mapping) else {})}
    return out


class JobClock:
    """Models left and ETA of a running job, from its progress events.

    The current model's remaining time is its mean epoch time times the epochs left (an upper
    estimate: early stopping ends sooner); a model not started yet costs its :data:`TYPICAL_S`,
    scaled by how the finished models compared with theirs.
    """

    def __init__(self, now: float | None = None) -> None:
        self.started = time.monotonic() if now is None else now
        self.model_started = self.started
        self.done: dict[str, float] = {}  # model -> seconds it took

    def update(self, progress: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        """``progress`` (a pipeline Progress as a dict) plus ``models_left`` and ``eta_s``."""
        now = time.monotonic() if now is None else now
        model, stage = progress.get("model"), progress.get("stage")
        pending = list(progress.get("pending") or ())
        if stage == "start":
            self.model_started = now
        elif stage == "done" and model is not None:
            self.done[model] = now - self.model_started
        ran = now - self.model_started
        scale = self._scale()
        if stage == "done":
            current = 0.0
        elif stage == "epoch" and progress.get("epoch") and progress.get("epochs"):
            epoch, epochs = int(progress["epoch"]), int(progress["epochs"])
            current = ran / epoch * max(epochs - epoch, 0)
        else:
            current = max(TYPICAL_S.get(str(model), UNKNOWN_S) * scale - ran, 0.0)
        rest = sum(TYPICAL_S.get(m, UNKNOWN_S) for m in pending) * scale
        left = len(pending) + (0 if stage == "done" else 1)
        return {**progress, "pending": pending, "models_left": left, "eta_s": round(current + rest, 1)}

    def _scale(self) -> float:
        typical = sum(TYPICAL_S.get(m, UNKNOWN_S) for m in self.done)
        return sum(self.done.values()) / typical if typical > 0 and self.done else 1.0


def still_training(jobs: Sequence[Any]) -> dict[str, int]:
    """Served name -> id of the open job that will publish a version of it (the first one that will).

    A running job names its current and pending models from its progress; a queued one every model
    it asks for (a first-run job less :data:`REUSED`). A job with ``"objective": "rating"`` publishes
    its rating-capable models under their ``-rating`` names, and the names say so.
    """
    from app.recsys.pipeline import resolve_models
    from app.recsys.store import served_name

    out: dict[str, int] = {}
    for job in sorted(jobs, key=lambda j: j.id):
        p = job.progress or {}
        objective = (job.params or {}).get("objective")
        objective = objective if isinstance(objective, str) else None
        if job.status == "running" and p.get("model"):
            names = ([] if p.get("stage") == "done" else [p["model"]]) + list(p.get("pending") or [])
        else:
            try:
                names = resolve_models(job.models, objective=objective)
            except (KeyError, ValueError):
                continue
            if job.trigger == TRIGGER:
                names = [n for n in names if n not in REUSED]
        for name in names:
            out.setdefault(served_name(name, objective), job.id)
    return out
