"""Ingestion throughput (events/s) on SQLite and PostgreSQL, with PostgreSQL's own COPY as the reference.

Workloads: the importer on ML-100K; POST /v1/interactions in batches of 5,000 against a real
`deeprec serve` in a subprocess, and one event per call (how a tracking client sends them, where the
fixed cost of a call is what counts: its CPU time in the server is reported); demo-data at 1M events.
Then the demo rows are written again with COPY into the same (emptied) interaction table, and into
a copy of it without foreign keys.
Writes the table into BENCHMARKS.md under "## Ingestion" (other sections are left alone).

    .venv/bin/python bench/ingest.py [--events 1000000] [--post-events 100000] [--calls 2000]
        [--backends sqlite,postgresql] [--workloads import,post,calls,demo] [--no-write]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import psycopg
from serve import cpu_seconds  # bench/serve.py: CPU seconds of a process and its children, from /proc
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.migrations import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.ingest.demo import DemoConfig, generate, load_demo
from app.ingest.movielens import import_movielens
from app.paths import REPO_ROOT, ml100k_available, ml100k_dir

PG_DEFAULT = os.environ.get("DEEPREC_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
COLUMNS = "user_id, item_id, type, value, occurred_at, event_id"


def settings_for(url: str, models: Path) -> Settings:
    return Settings(_env_file=None, database_url=url, models_dir=models, log_level="WARNING")  # type: ignore[call-arg]


@contextmanager
def fresh_database(backend: str, pg_url: str, workdir: Path) -> Iterator[str]:
    """A migrated, empty database: a new SQLite file or a new PostgreSQL schema (dropped afterwards)."""
    name = f"bench_{secrets.token_hex(4)}"
    if backend == "sqlite":
        url = f"sqlite:///{workdir / name}.db"
        upgrade(settings_for(url, workdir))
        yield url
        return
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    url = make_url(pg_url).update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
    try:
        upgrade(settings_for(url, workdir))
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    events = fn()
    return events, time.perf_counter() - start


def bench_import(url: str, workdir: Path) -> tuple[int, float]:
    settings = settings_for(url, workdir)
    engine = make_engine(settings)
    try:
        return timed(lambda: import_movielens(ml100k_dir(), settings, make_sessionmaker(engine)).events)
    finally:
        engine.dispose()


def bench_demo(url: str, workdir: Path, events: int) -> tuple[int, float]:
    settings = settings_for(url, workdir)
    engine = make_engine(settings)
    cfg = DemoConfig(users=max(events // 50, 100), items=max(events // 200, 1_500), events=events, seed=0)
    try:
        return timed(lambda: load_demo(cfg, settings, make_sessionmaker(engine)).events)
    finally:
        engine.dispose()


def payloads(events: int, batch: int) -> list[bytes]:
    """Pre-encoded request bodies, so the timing is the server's work plus HTTP, not the client's JSON."""
    _, _, chunks = generate(DemoConfig(users=max(events // 50, 50), items=1_500, events=events, seed=1))
    frame = pd.concat(list(chunks), ignore_index=True)
    frame = frame.rename(columns={"value": "rating", "ts": "timestamp"}).drop(columns="type")
    frame["event_id"] = [f"post-{k}" for k in range(len(frame))]
    rows = frame.to_dict("records")
    return [json.dumps({"interactions": rows[s : s + batch]}).encode() for s in range(0, len(rows), batch)]


def bench_post(url: str, workdir: Path, bodies: list[bytes], cpu: dict[str, float] | None = None) -> tuple[int, float]:
    """Sends ``bodies`` one after another to a fresh `deeprec serve`; with ``cpu``, its "server_s" is set to the
    server's CPU seconds over the sends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DEEPREC_DATABASE_URL": url, "DEEPREC_MODELS_DIR": str(workdir / "models"),
           "DEEPREC_LOG_LEVEL": "WARNING", "DEEPREC_EMBEDDED_WORKER": "false", "DEEPREC_API_KEY": ""}  # fmt: skip
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=300, headers={"content-type": "application/json"}) as client:
            for _ in range(600):
                try:
                    checks = client.get("/readyz").json().get("checks", {})
                    if checks.get("database", {}).get("ok") and checks.get("migrations", {}).get("ok"):
                        break
                except (httpx.TransportError, ValueError):
                    pass
                if server.poll() is not None:
                    err = server.stderr.read().decode()[-2000:] if server.stderr else ""
                    raise RuntimeError(f"server exited: {err}")
                time.sleep(0.2)
            total = 0

            def send() -> int:
                nonlocal total
                for body in bodies:
                    r = client.post("/v1/interactions", content=body)
                    r.raise_for_status()
                    total += r.json()["inserted"]
                return total

            before = cpu_seconds(server.pid)
            result = timed(send)
            if cpu is not None:
                cpu["server_s"] = cpu_seconds(server.pid) - before
            return result
    finally:
        server.terminate()
        server.wait(30)


def bench_copy(url: str) -> dict[str, tuple[int, float]]:
    """COPY the stored demo rows back into interaction (emptied) and into a clone without foreign keys."""
    u = make_url(url)
    conninfo = u.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, options=u.query["options"]) as conn:  # type: ignore[arg-type]
        buf = io.BytesIO()
        with conn.cursor().copy(f"COPY (SELECT {COLUMNS} FROM interaction ORDER BY id) TO STDOUT") as out:
            for data in out:
                buf.write(data)
        rows = conn.execute("SELECT count(*) FROM interaction").fetchone()[0]  # type: ignore[index]
        conn.execute("CREATE TABLE copy_ref (LIKE interaction INCLUDING ALL)")
        conn.execute("TRUNCATE interaction")
        conn.commit()
        results = {}
        for table in ("interaction", "copy_ref"):
            start = time.perf_counter()
            with conn.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as cp:
                cp.write(buf.getvalue())
            conn.commit()
            results[table] = (rows, time.perf_counter() - start)
        return results


def rate(result: tuple[int, float] | None) -> float | None:
    return None if result is None else result[0] / result[1]


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="demo-data events")
    p.add_argument("--post-events", type=int, default=100_000, help="events sent through POST /v1/interactions")
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--calls", type=int, default=2_000, help="POST /v1/interactions calls of one event each")
    p.add_argument("--workloads", default="import,post,calls,demo", help="comma list of the workloads to run")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=PG_DEFAULT)
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    command = "python bench/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:])
    backends = args.backends.split(",")
    workloads = set(args.workloads.split(","))
    bodies = payloads(args.post_events, args.batch) if "post" in workloads else []
    singles = payloads(args.calls, 1) if "calls" in workloads else []
    load_before = os.getloadavg()
    results: dict[str, dict[str, tuple[int, float] | None]] = {}
    cpu_ms: dict[str, float] = {}  # backend -> server CPU ms per one-event call
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for backend in backends:
            res: dict[str, tuple[int, float] | None] = {}
            if ml100k_available() and "import" in workloads:
                with fresh_database(backend, args.pg_url, work) as url:
                    res["import"] = bench_import(url, work)
            if "post" in workloads:
                with fresh_database(backend, args.pg_url, work) as url:
                    res["post"] = bench_post(url, work, bodies)
            if "calls" in workloads:
                cpu: dict[str, float] = {}
                with fresh_database(backend, args.pg_url, work) as url:
                    res["calls"] = bench_post(url, work, singles, cpu)
                cpu_ms[backend] = cpu["server_s"] * 1000 / len(singles)
            if "demo" in workloads:
                with fresh_database(backend, args.pg_url, work) as url:
                    res["demo"] = bench_demo(url, work, args.events)
                    if backend == "postgresql":
                        copies = bench_copy(url)
                        res["copy"], res["copy_nofk"] = copies["interaction"], copies["copy_ref"]
            results[backend] = res
            print(backend, {k: fmt(rate(v)) for k, v in res.items()}, {k: f"{v:.2f} ms" for k, v in cpu_ms.items()},
                  flush=True)  # fmt: skip
    report = render(results, cpu_ms, command, load_before, os.getloadavg(), args)
    print(report)
    if not args.no_write:
        write_section(REPO_ROOT / "BENCHMARKS.md", report)
    return 0


def render(
    results: dict,
    cpu_ms: dict[str, float],
    command: str,
    load_before: tuple,
    load_after: tuple,
    args: argparse.Namespace,
) -> str:
    sq, pg = results.get("sqlite", {}), results.get("postgresql", {})
    copy = rate(pg.get("copy"))
    rows = [
        ("`deeprec import movielens` ML-100K (100,000 ratings)", "import"),
        (f"`POST /v1/interactions`, {args.batch:,} events per call ({args.post_events:,} events)", "post"),
        (f"`POST /v1/interactions`, one event per call ({args.calls:,} calls, one after another)", "calls"),
        (f"`deeprec demo-data` ({args.events:,} events requested)", "demo"),
    ]
    lines = [
        "## Ingestion",
        "",
        f"Command: `{command.strip()}` (from the repository root, with `.venv/bin/python`).",
        "",
        "| Workload | events | SQLite events/s | PostgreSQL events/s | PostgreSQL / COPY |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in rows:
        if key not in sq and key not in pg:
            continue
        n = (sq.get(key) or pg.get(key) or (0, 0))[0]
        pg_rate = rate(pg.get(key))
        ratio = "n/a" if copy is None or pg_rate is None or key == "calls" else f"{pg_rate / copy:.0%}"
        lines.append(f"| {label} | {n:,} | {fmt(rate(sq.get(key)))} | {fmt(pg_rate)} | {ratio} |")
    if copy is not None:
        n = pg["copy"][0]
        nofk = fmt(rate(pg.get("copy_nofk")))
        reference = "PostgreSQL `COPY` of the demo rows into `interaction` (reference)"
        lines.append(f"| {reference} | {n:,} | | {fmt(copy)} | 100% |")
        lines.append(f"| PostgreSQL `COPY` into a copy of the table without foreign keys | {n:,} | | {nofk} | |")
    pg_version = "n/a"
    if pg:
        admin = make_url(args.pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(admin) as c:
            pg_version = str(c.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    if cpu_ms:
        names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
        per_call = ", ".join(f"{names.get(b, b)} {ms:.2f} ms" for b, ms in cpu_ms.items())
        lines += [
            "",
            f"Server CPU time per one-event call (the `deeprec serve` process, from `/proc`): {per_call}. One",
            "event per call is bound by what every call costs (HTTP, validation, a transaction, a commit), so",
            "COPY is no reference for it.",
        ]
    lines += [
        "",
        "Each workload starts on an empty, migrated database (a new SQLite file, a new PostgreSQL schema).",
        "Events/s counts stored events over wall time: reading and validating files, generating data, HTTP and",
        "JSON included. COPY is measured in the same run on the same rows (the stored demo events) into the same",
        "indexed table, foreign-key checks included; every ingestion path writes through foreign keys and the",
        "unique event_id index, so that is the fair reference. The COPY without foreign keys shows their cost.",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg_version}; load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after the run. The machine is shared: with a load",
        "above its CPU count every figure, COPY included, is several times below what an idle machine gives, so the",
        "ratios to COPY, measured in the same run, are the comparable part.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    """Replace the "## Ingestion" section of BENCHMARKS.md (or append it), leaving other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find("\n## Ingestion\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
