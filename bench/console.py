"""Cost of the console's read queries at scale: GET /v1/stats's aggregates and GET /v1/items / users pages.

    python bench/console.py [--events 1000000] [--backends sqlite,postgresql] [--workdir var/bench-console]

For each size and backend it writes a demo data set (``deeprec demo-data``: users = events / 20, items =
events / 50, at most 200,000) into a fresh SQLite file or PostgreSQL schema (kept for later runs unless
--fresh) and times each query in this process: the median and the largest wall time of --repeat runs, the
database's own work included (PostgreSQL runs in its server, so this process's CPU time is not the cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db import browse  # noqa: E402
from app.db.migrations import upgrade  # noqa: E402
from app.db.session import make_engine, make_sessionmaker  # noqa: E402
from app.db.stats import data_stats  # noqa: E402
from app.ingest.demo import DemoConfig, load_demo  # noqa: E402

PG = os.environ.get("DEEPREC_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def database(backend: str, events: int, workdir: Path, fresh: bool) -> tuple[Settings, bool]:
    """Settings on the size's database, and whether it already holds the data."""
    if backend == "sqlite":
        path = workdir / f"console-{events}.db"
        if fresh and path.exists():
            path.unlink()
        return Settings(_env_file=None, database_url=f"sqlite:///{path}"), path.exists()  # type: ignore[call-arg]
    schema = f"bench_console_{events}"
    conninfo = make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    url = make_url(PG).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    return Settings(_env_file=None, database_url=url), exists  # type: ignore[call-arg]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    walls, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), max(walls), out


def run(backend: str, events: int, args: argparse.Namespace) -> None:
    settings, ready = database(backend, events, args.workdir, args.fresh)
    upgrade(settings)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    if not ready:
        cfg = DemoConfig(users=events // 20, items=min(200_000, events // 50), events=events, seed=0)
        t0 = time.perf_counter()
        report = load_demo(cfg, settings, sessions)
        print(f"# {backend} {events:,}: loaded {report} in {time.perf_counter() - t0:.0f} s", flush=True)
    with sessions() as s:
        deep = browse.encode_cursor(browse.list_items(session=s, limit=1).rows[0].id + min(150_000, events // 60))
        queries: dict[str, Callable[[], Any]] = {
            "stats (counts + 90 days per day)": lambda: data_stats(session=s, days=90),
            "items, first page of 50": lambda: browse.list_items(session=s, limit=50),
            "items, a page deep in the catalogue": lambda: browse.list_items(session=s, limit=50, cursor=deep),
            "items, q=harbor (common)": lambda: browse.list_items(session=s, q="harbor", limit=50),
            "items, q=zzz (no match: full scan)": lambda: browse.list_items(session=s, q="zzz", limit=50),
            "items, category=Western": lambda: browse.list_items(session=s, category="Western", limit=50),
            "items, 500 ids": lambda: browse.list_items(session=s, ids=[f"i{n}" for n in range(1, 1000, 2)], limit=500),
            "users, q=u777 (prefix of a few)": lambda: browse.list_users(session=s, q="u777", limit=20),
        }
        for name, fn in queries.items():
            median, worst, out = timed(fn, args.repeat)
            rows = len(out.rows) if hasattr(out, "rows") else out.interactions
            cells = [backend, f"{events:,}", name, f"{median * 1000:,.1f}", f"{worst * 1000:,.1f}", f"{rows:,}"]
            print("| " + " | ".join(cells) + " |", flush=True)
            s.rollback()
    engine.dispose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", default="1000000", help="comma list of event counts")
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--workdir", type=Path, default=ROOT / "var" / "bench-console")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--fresh", action="store_true", help="write the data again")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"# load before: {os.getloadavg()[0]:.1f}")
    print("| backend | events | query | median ms | max ms | rows (events for stats) |\n|---|---:|---|---:|---:|---:|")
    for events in (int(e) for e in args.events.split(",")):
        for backend in args.backends.split(","):
            run(backend, events, args)
    print(f"# load after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
