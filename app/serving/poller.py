"""Hot swap: every API process polls model_version and swaps newly active versions in (the registry's one
reference assignment). A version that fails to load is refused and the previous one keeps serving, until
it is activated again or its files change; ``registry.errors`` (/readyz, /v1/models) says why meanwhile."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.jobs.versions import active_activations
from app.recsys.store import StoreError, served_names
from app.serving.metrics import set_loaded
from app.serving.registry import ModelRegistry

log = logging.getLogger(__name__)


class VersionPoller:
    def __init__(self, registry: ModelRegistry, sessions: sessionmaker[Session]) -> None:
        self.registry = registry
        self.sessions = sessions
        self.refused: dict[tuple[str, str], tuple[Any, ...]] = {}  # (name, version) -> what it was refused at
        self.swaps = 0
        self.last_swap_s: float | None = None  # seconds the last load-and-swap took

    def attempt(self, name: str, version: str, activated_at: datetime | None) -> tuple[Any, ...]:
        """What a load of this version depends on: its activation and its files (names, sizes, times)."""
        try:
            folder = self.registry.store.path(name, version)
            files = tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")))
        except (StoreError, OSError):
            files = ()
        return activated_at, files

    def active(self) -> dict[str, tuple[str, datetime | None]]:
        with self.sessions() as session:
            return active_activations(session=session)

    def wanted(self, active: dict[str, tuple[str, datetime | None]] | None = None) -> dict[str, str]:
        """Active versions in the database, minus refused ones whose activation and files are as they
        were when refused (the loaded version stays instead)."""
        active = self.active() if active is None else active
        current = self.registry.models.versions()
        out: dict[str, str] = {}
        valid = served_names()
        for name, (version, activated_at) in active.items():
            if name not in valid:
                continue
            refused_at = self.refused.get((name, version))
            if refused_at is not None and refused_at == self.attempt(name, version, activated_at):
                if name in current:
                    out[name] = current[name]
                continue
            self.refused.pop((name, version), None)
            out[name] = version
        return out

    def check(self) -> bool:
        """Swap in what changed; True when a new set was published."""
        if not self.registry.ready:  # the startup load has not finished; it reads the same table
            return False
        active = self.active()
        wanted = self.wanted(active)
        if wanted == self.registry.models.versions():
            return False
        t0 = time.perf_counter()
        models = self.registry.refresh(wanted)
        self.last_swap_s = time.perf_counter() - t0
        for name, version in wanted.items():
            if name not in models or models[name].version != version:
                self.refused[(name, version)] = self.attempt(name, version, active[name][1])
                log.error(
                    "active version refused; previous version keeps serving",
                    extra={"model": name, "version": version, "error": self.registry.errors.get(name),
                           "serving": models[name].version if name in models else None},
                )  # fmt: skip
        self.swaps += 1
        set_loaded({name: (m.version, str(m.device)) for name, m in models.items()})
        log.info("models swapped", extra={"models": models.versions(), "seconds": round(self.last_swap_s, 4)})
        return True


class Ticker:
    """One daemon thread running periodic tasks (period_s, fn) until stopped; ``nudge`` runs them now."""

    def __init__(self, tasks: list[tuple[float, Callable[[], object]]], name: str = "ticker") -> None:
        self.tasks = tasks
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        due = [0.0] * len(self.tasks)
        while not self._stop.is_set():
            now = time.monotonic()
            forced = self._wake.is_set()
            self._wake.clear()
            for i, (period, fn) in enumerate(self.tasks):
                if forced or now >= due[i]:
                    due[i] = now + period
                    try:
                        fn()
                    except Exception:  # noqa: BLE001  (the database may be briefly away; next tick retries)
                        log.exception("periodic task failed", extra={"task": getattr(fn, "__name__", str(fn))})
            self._wake.wait(max(0.01, min(due) - time.monotonic()))
