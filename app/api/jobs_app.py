"""Lifespan parts for background training: the hot-swap poller and the embedded worker process.

Training never runs in the API process: ``deeprec serve`` starts one ``deeprec worker``
subprocess (DEEPREC_EMBEDDED_WORKER=false turns it off when workers run separately) and stops it
on shutdown. Every API process polls model_version and swaps newly active versions in.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from fastapi import FastAPI

from app.config import Settings
from app.jobs import queue
from app.serving.poller import Ticker, VersionPoller

log = logging.getLogger(__name__)
WORKER_STOP_S = 20.0  # a worker leaves at the next epoch boundary; then it is killed


def start_hot_swap(app: FastAPI, stack: ExitStack) -> None:
    """Poll for active versions every DEEPREC_MODEL_POLL_INTERVAL_S; reap dead workers' jobs meanwhile."""
    settings: Settings = app.state.settings
    sessions = app.state.sessionmaker
    poller = VersionPoller(app.state.registry, sessions)

    def reap() -> None:
        with sessions() as session:
            queue.reap_stale(
                session=session, stale_after_s=settings.job_stale_after_s, max_attempts=settings.job_max_attempts
            )

    ticker = Ticker([(settings.model_poll_interval_s, poller.check), (settings.job_heartbeat_s, reap)], "hot-swap")
    app.state.version_poller = poller
    app.state.hot_swap = ticker
    ticker.start()
    stack.callback(ticker.stop)


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


def start_embedded_worker(app: FastAPI, stack: ExitStack) -> None:
    """One `deeprec worker` subprocess per host (uvicorn --workers N starts one, not N)."""
    settings: Settings = app.state.settings
    if not settings.embedded_worker or not first_on_host(settings, stack):
        return
    proc = spawn_worker(settings)
    log.info("embedded worker started", extra={"pid": proc.pid})
    app.state.embedded_worker = proc
    stack.callback(stop_worker, proc)
