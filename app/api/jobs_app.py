"""Lifespan parts for background training: the hot-swap poller, and the embedded ``deeprec worker``
subprocess (DEEPREC_EMBEDDED_WORKER=false turns it off), restarted when it dies and stopped on shutdown.
Training never runs in the API process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from app.api.routes.health import NotReady
from app.config import Settings
from app.jobs import queue
from app.serving.poller import Ticker, VersionPoller

log = logging.getLogger(__name__)
WORKER_STOP_S = 20.0  # a worker leaves at the next epoch boundary; then it is killed
RESTART_MIN_S, RESTART_MAX_S = 1.0, 60.0  # backoff between restarts of a worker that keeps dying
HEALTHY_AFTER_S = 60.0  # a worker that ran this long has its backoff reset


def start_hot_swap(app: FastAPI, stack: ExitStack) -> None:
    """Poll for active versions every DEEPREC_MODEL_POLL_INTERVAL_S; reap dead workers' jobs in a thread of its own."""
    settings: Settings = app.state.settings
    sessions = app.state.sessionmaker
    poller = VersionPoller(app.state.registry, sessions)

    def reap() -> None:
        with sessions() as session:
            queue.reap_stale(
                session=session, stale_after_s=settings.job_stale_after_s, max_attempts=settings.job_max_attempts
            )

    # Two threads: the reaper writes to the database, and on SQLite that write can wait for the lock
    # while a worker commits; the poller must not wait behind it to swap a published version in.
    ticker = Ticker([(settings.model_poll_interval_s, poller.check)], "hot-swap")
    reaper = Ticker([(settings.job_heartbeat_s, reap)], "job-reaper")
    app.state.version_poller = poller
    app.state.hot_swap = ticker
    for thread in (ticker, reaper):
        thread.start()
        stack.callback(thread.stop)


def worker_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a worker subprocess: this process's settings as DEEPREC_* variables."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("DEEPREC_")}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Path):
            text = str(value.resolve())
        else:
            text = str(value)
        env[f"DEEPREC_{name.upper()}"] = text
    env["DEEPREC_EMBEDDED_WORKER"] = "false"
    env["DEEPREC_MIGRATE_ON_START"] = "false"  # the API migrated already
    return env


def spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "app.jobs.worker", "--parent-pid", str(os.getpid())]
    return subprocess.Popen(cmd, env=worker_env(settings))


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = WORKER_STOP_S) -> int:
    """SIGTERM (the job in progress goes back to the queue), then SIGKILL if it does not leave in time."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop in time; killing it", extra={"pid": proc.pid})
            proc.kill()
            proc.wait()
    return proc.returncode


def first_on_host(settings: Settings, stack: ExitStack) -> bool:
    """True in the one API process (of several uvicorn workers) holding the embedded-worker lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: every process starts its own
        return True
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    handle = open(settings.models_dir / ".embedded-worker.lock", "a+")  # noqa: SIM115  (held until shutdown)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    stack.callback(handle.close)
    return True


class WorkerSupervisor:
    """Keeps the embedded worker alive: reaps it when it exits (no zombie), hands the job it was running
    back to the queue at once, and starts a new one after a backoff (RESTART_MIN_S doubling up to
    RESTART_MAX_S, reset once a worker has run HEALTHY_AFTER_S)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        spawn: Callable[[Settings], subprocess.Popen[bytes]] = spawn_worker,
        poll_s: float = 0.2,
    ) -> None:
        self.settings, self.sessions, self.spawn, self.poll_s = settings, sessions, spawn, poll_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.restart_at: float | None = None  # monotonic time of the next start while none is alive
        self._started_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._launch()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.proc is not None:
            stop_worker(self.proc)

    def _launch(self) -> None:
        self.proc = self.spawn(self.settings)
        self._started_at, self.restart_at = time.monotonic(), None
        log.info("embedded worker started", extra={"pid": self.proc.pid, "restarts": self.restarts})

    def _run(self) -> None:
        backoff = RESTART_MIN_S
        while not self._stop.wait(self.poll_s):
            assert self.proc is not None
            code = self.proc.poll()  # reaps an exited worker
            if code is None:
                if time.monotonic() - self._started_at > HEALTHY_AFTER_S:
                    backoff = RESTART_MIN_S
                continue
            self.last_exit = code
            self.restart_at = time.monotonic() + backoff
            log.error("embedded worker exited; restarting", extra={"pid": self.proc.pid, "code": code,
                                                                   "restart_in_s": backoff})  # fmt: skip
            self._release_jobs(self.proc.pid)
            if self._stop.wait(backoff):
                self.proc = None
                return
            backoff = min(2 * backoff, RESTART_MAX_S)
            self.restarts += 1
            self._launch()

    def _release_jobs(self, pid: int) -> None:
        """The dead worker's running job goes back to the queue (or fails on its last attempt) now,
        rather than after DEEPREC_JOB_STALE_AFTER_S without heartbeat."""
        try:
            with self.sessions() as session:
                reaped = queue.reap_stale(
                    session=session, stale_after_s=self.settings.job_stale_after_s,
                    max_attempts=self.settings.job_max_attempts, dead_worker=f"{socket.gethostname()}:{pid}:",
                )  # fmt: skip
        except Exception:  # noqa: BLE001  (database away: the stale-heartbeat reaper takes the job later)
            log.exception("could not release the dead worker's jobs", extra={"pid": pid})
            return
        for r in reaped:
            log.warning("dead worker's job released", extra={"job_id": r.job_id, "status": r.status})

    def check(self, _app: FastAPI) -> str:
        """Readiness: the embedded worker is alive."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            return f"embedded worker pid {proc.pid}" + (f", restarted {self.restarts} time(s)" if self.restarts else "")
        code = proc.returncode if proc is not None else self.last_exit  # the supervisor may not have looked yet
        wait = max(0.0, (self.restart_at or time.monotonic()) - time.monotonic())
        raise NotReady(f"no embedded worker alive (last exit code {code}); restarting in {wait:.0f}s")


def start_embedded_worker(app: FastAPI, stack: ExitStack) -> None:
    """One supervised `deeprec worker` subprocess per host (uvicorn --workers N starts one, not N)."""
    settings: Settings = app.state.settings
    if not settings.embedded_worker or not first_on_host(settings, stack):
        return
    supervisor = WorkerSupervisor(settings, app.state.sessionmaker)
    supervisor.start()
    app.state.worker_supervisor = supervisor
    app.state.ready_checks["worker"] = supervisor.check
    stack.callback(supervisor.stop)
