"""`deeprec`: serve | db | import | demo-data here; train | evaluate | worker | models from their packages.

Commands of other packages are registered by `add_<command>_parser(sub)` in their module, which
sets `func` on the parser. Only the module of the command being run is imported, so `deeprec serve`
never imports torch; a command whose module is absent exits 2 saying so.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import Settings, get_settings
from app.logs import configure_logging

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

# command -> (module, parser-adding function, help): the places other packages plug in.
EXTERNAL: dict[str, tuple[str, str, str]] = {
    "train": ("app.commands.train", "add_train_parser", "train models from the database into the model store"),
    "evaluate": ("app.commands.evaluate", "add_evaluate_parser", "offline evaluation of models"),
    "worker": ("app.jobs.worker", "add_worker_parser", "run training jobs from the database queue"),
    "models": ("app.commands.train", "add_models_parser", "list trained model versions"),
}


def _fallback_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=None)  # `make run`: --model default --if-missing
    p.add_argument("--if-missing", action="store_true")
    p.add_argument("--quick-first", action="store_true")


FALLBACK_FLAGS: dict[str, Callable[[argparse.ArgumentParser], None]] = {"train": _fallback_train_flags}


def _unavailable(command: str, module: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"deeprec {command}: not available in this build ({module} is missing)", file=sys.stderr)
        return 2

    return run


def _add_external(sub: Any, command: str, invoked: bool) -> None:
    module_name, adder, help_text = EXTERNAL[command]
    if invoked:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise  # the module exists but one of its imports is broken: a real error
        else:
            getattr(module, adder)(sub)
            return
    p = sub.add_parser(command, help=help_text, add_help=invoked)
    FALLBACK_FLAGS.get(command, lambda _p: None)(p)
    p.set_defaults(func=_unavailable(command, module_name))


def _settings() -> Settings:
    return get_settings()


@contextmanager
def _sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated database (unless DEEPREC_MIGRATE_ON_START=false)."""
    from app.db.migrations import upgrade
    from app.db.session import make_engine, make_sessionmaker

    if settings.migrate_on_start:
        upgrade(settings)
    engine = make_engine(settings)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.db.migrations import upgrade

    settings = _settings()
    if settings.migrate_on_start:
        upgrade(settings)  # once here, before any worker process starts
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's records go through the one root handler (app.logs)
        access_log=False,  # the app writes one access line per request (deeprec.access)
        http="app.api.server:NoDelayH11Protocol",  # TCP_NODELAY: stock uvicorn --workers N waits ~40 ms a reply
    )
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from alembic import command

    from app.db import migrations
    from app.db.session import make_engine

    settings = _settings()
    if args.db_command == "upgrade":
        migrations.upgrade(settings, args.revision)
    elif args.db_command == "downgrade":
        migrations.downgrade(settings, args.revision)
    elif args.db_command == "current":
        engine = make_engine(settings)
        with engine.connect() as conn:
            current = migrations.current_revisions(conn)
        engine.dispose()
        heads = migrations.head_revisions()
        print(f"database: {', '.join(current) or 'empty'}; head: {', '.join(heads)}")
        return 0 if current == heads else 1
    else:  # revision: a new migration file in app/db/migrations/versions
        engine = make_engine(settings, migrating=True)
        with engine.begin() as conn:
            cfg = migrations.alembic_config(conn)
            command.revision(cfg, message=args.message, autogenerate=args.autogenerate, rev_id=args.rev_id)
        engine.dispose()
    if args.db_command in {"upgrade", "downgrade"}:
        print(f"database at {args.revision}: {settings.database_url}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from app.ingest.loader import BadRows

    settings = _settings()
    path = Path(args.path)
    if not path.exists():
        print(f"deeprec import: {path} does not exist", file=sys.stderr)
        return 2
    try:
        with _sessions(settings) as sessions:
            if args.source == "movielens":
                from app.ingest.movielens import import_movielens

                report = import_movielens(path, settings, sessions, chunk_size=args.chunk_size)
            else:
                from app.ingest.csvfile import import_csv

                report = import_csv(
                    path, settings, sessions, chunk_size=args.chunk_size, event_type=args.type, delimiter=args.delimiter
                )
    except (BadRows, FileNotFoundError) as exc:
        print(f"deeprec import: {exc}; earlier chunks are stored, re-running skips them", file=sys.stderr)
        return 2
    print(report.summary(f"imported {path}"))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from app.db import repository
    from app.ingest.demo import DemoConfig, load_demo

    settings = _settings()
    with _sessions(settings) as sessions:
        if args.if_empty:
            with sessions() as session:
                stored = repository.counts(session=session).interactions
            if stored:
                print(f"the database already holds {stored:,} interactions; leaving it as it is (--if-empty)")
                return 0
        cfg = DemoConfig(users=args.users, items=args.items, events=args.events, seed=args.seed)
        report = load_demo(cfg, settings, sessions, chunk_size=args.chunk_size)
    print(report.summary("demo data"))
    if report.events < 0.95 * args.events:
        print(f"(asked for {args.events:,}: each user rates an item once and ran out of items near their tastes)")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from app.config import effective, reference_markdown

    if args.markdown:
        sys.stdout.write(reference_markdown())
        return 0
    for name, value in effective(_settings()):
        print(f"{name}={value}")
    return 0


def build_parser(invoked: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deeprec", description="DeepRec recommendation service")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the HTTP API (docs at /docs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("db", help="database migrations")
    db = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db.add_parser("upgrade", help="migrate to the newest revision").add_argument("revision", nargs="?", default="head")
    db.add_parser("downgrade", help="migrate back to a revision ('base': empty)").add_argument("revision")
    db.add_parser("current", help="show the revision of the database (exit 1 if behind)")
    rev = db.add_parser("revision", help="write a new migration file")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--autogenerate", action="store_true", help="diff the ORM against the database")
    rev.add_argument("--rev-id", default=None, help="revision id, e.g. 0002")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("import", help="bulk-load interactions from files")
    src = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    ml = src.add_parser("movielens", help="an ML-100K, ML-1M, ML-latest(-small) or ML-25M folder")
    csv = src.add_parser("csv", help="a CSV with a header user,item[,rating][,timestamp][,type][,event_id]")
    csv.add_argument("--type", default=None, help="event type of every row (default: rating if rated, else view)")
    csv.add_argument("--delimiter", default=",")
    for q in (ml, csv):
        q.add_argument("path")
        q.add_argument("--chunk-size", type=int, default=50_000, help="events per transaction")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("demo-data", help="write a synthetic data set (long tail, tastes, drift, ratings)")
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--items", type=int, default=1_500)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--if-empty", action="store_true", help="do nothing when the database has interactions")
    p.add_argument("--chunk-size", type=int, default=100_000, help="events per transaction")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("settings", help="print the settings in effect (keys masked), or their reference")
    p.add_argument("--markdown", action="store_true", help="the reference of every setting (docs/configuration.md)")
    p.set_defaults(func=cmd_settings)

    for command in EXTERNAL:
        _add_external(sub, command, invoked=command == invoked)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    invoked = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(invoked).parse_args(argv)
    settings = _settings()
    level = settings.log_level.upper()
    configure_logging(level, settings.log_format)
    if level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per revision check is noise here
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
