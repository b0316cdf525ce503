"""`deeprec worker`: claim training jobs from the database and run them in this process.

The loop reaps jobs whose worker died, queues scheduled retrains when due, claims the oldest
queued job and runs it, heartbeating from a thread meanwhile. SIGTERM/SIGINT stop it between
epochs: a job in progress goes back to the queue. With ``--parent-pid`` (the embedded worker of
`deeprec serve`) it also exits when that process is gone.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.db.session import make_engine, make_sessionmaker
from app.jobs import queue, schedule
from app.jobs.publish import open_store
from app.jobs.runner import JobRunner
from app.logs import configure_logging

log = logging.getLogger("app.jobs.worker")  # also when run as `python -m app.jobs.worker`


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Heartbeat:
    """Beats for one claim from its own thread and session; remembers a cancel or a lost claim."""

    def __init__(self, sessions: sessionmaker[Session], claim: queue.Claim, period_s: float) -> None:
        self.sessions, self.claim, self.period_s = sessions, claim, period_s
        self.cancel = False
        self.lost = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job.id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        with self.sessions() as session:
            while not self._done.wait(self.period_s):
                try:
                    sig = queue.heartbeat(session=session, claim=self.claim)
                except Exception:  # noqa: BLE001  (a missed beat is retried; the reaper allows several)
                    log.exception("heartbeat failed", extra={"job_id": self.claim.job.id})
                    session.rollback()
                    continue
                self.cancel |= sig.cancel
                self.lost |= not sig.owned


class Worker:
    def __init__(self, settings: Settings, *, poll_s: float = 1.0, parent_pid: int | None = None) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.parent_pid = parent_pid
        self.name = worker_name()
        self.engine = make_engine(settings)
        self.sessions = make_sessionmaker(self.engine)
        self.stop = threading.Event()
        self.runner = JobRunner(settings, self.sessions, open_store(settings, self.sessions))

    def orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def stop_reason(self, beat: Heartbeat) -> str | None:
        if beat.lost:
            return "lost"
        if beat.cancel:
            return "cancelled"
        if self.stop.is_set() or self.orphaned():
            return "shutdown"
        return None

    def housekeeping(self, session: Session) -> None:
        s = self.settings
        for r in queue.reap_stale(session=session, stale_after_s=s.job_stale_after_s, max_attempts=s.job_max_attempts):
            log.warning("stale job reaped", extra={"job_id": r.job_id, "status": r.status})
        if s.retrain_interval or s.retrain_min_new_events:
            queued = schedule.maybe_enqueue(session, s)
            if queued is not None and queued.created:
                log.info("scheduled retrain queued", extra={"job_id": queued.job.id, "models": queued.job.models})

    def run_once(self) -> str | None:
        """One turn of the loop: housekeeping, then claim and run one job. The job's final status, or None."""
        with self.sessions() as session:
            self.housekeeping(session)
            claim = queue.claim(session=session, worker=self.name)
        if claim is None:
            return None
        job = claim.job
        log.info("job claimed", extra={"job_id": job.id, "models": job.models, "attempt": claim.attempt})
        with Heartbeat(self.sessions, claim, self.settings.job_heartbeat_s) as beat:
            status = self.runner.run(claim, lambda: self.stop_reason(beat))
        log.info("job ended", extra={"job_id": job.id, "status": status})
        return status

    def run(self, *, once: bool = False) -> None:
        log.info("worker started", extra={"worker": self.name})
        try:
            while not self.stop.is_set() and not self.orphaned():
                try:
                    status = self.run_once()
                except Exception:  # noqa: BLE001  (the database may be briefly away: wait and retry)
                    log.exception("worker loop error")
                    status = None
                if once and status is not None:
                    return
                if status is None:
                    self.stop.wait(self.poll_s)
        finally:
            self.engine.dispose()
            log.info("worker stopped", extra={"worker": self.name})


def add_worker_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run training jobs from the database queue (and the retrain schedule)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between looks at an empty queue")
    p.add_argument("--once", action="store_true", help="exit after one job")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.migrate_on_start:
        from app.db.migrations import upgrade

        upgrade(settings)
    worker = Worker(settings, poll_s=args.poll, parent_pid=args.parent_pid)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping at the next epoch", extra={"signal": signum})
        worker.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run(once=args.once)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deeprec")
    add_worker_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["worker", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
