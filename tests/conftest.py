"""Shared fixtures. Every database-backed test runs on SQLite and on PostgreSQL.

Fixtures, for any test suite (api, db, jobs, serving):
- ``db_url``: URL of a migrated, empty database, parametrised over ``sqlite`` (a file in
  tmp_path, copied from a template migrated once per session) and ``postgresql`` (one schema
  per test session in DEEPREC_TEST_POSTGRES_URL, default postgresql+psycopg://root@127.0.0.1:5432/test,
  reached through search_path; its tables are emptied before each test). When PostgreSQL does
  not answer, its cases fail if CI is set and are skipped otherwise.
- ``empty_db_url``: same backends, never migrated (a fresh file or schema per test).
- ``settings``: hermetic Settings on ``db_url`` (no API key, models in tmp_path, CPU, no
  embedded worker, no retraining); ``make_settings(**overrides)`` builds variants.
- ``engine`` / ``session``: SQLAlchemy engine and Session on ``settings``.
- ``app`` / ``client``: ``create_app(settings)`` and a TestClient with the lifespan running;
  ``make_client(**overrides)`` gives clients on other settings (e.g. ``api_key="k"``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.config import Settings
from app.db.migrations import upgrade
from app.db.session import make_engine, make_sessionmaker

if TYPE_CHECKING:  # the API stack is imported only by the tests that use it
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

BACKENDS = ["sqlite", "postgresql"]
PG_DEFAULT_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
COUNTER_TABLES = {"history_rewrite", "catalogue_rewrite"}


def _hermetic(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "models_dir": tmp_path / "models",
        "api_key": None,
        "device": "cpu",
        "log_level": "WARNING",
        "embedded_worker": False,
        "migrate_on_start": True,
        "retrain_interval": None,
        "retrain_min_new_events": None,
        "gc_freeze": False,  # process-wide: tests that check it turn it on and thaw afterwards
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class Postgres:
    """The test server: a libpq conninfo for admin work and URLs pinned to one schema."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.conninfo = self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def schema_url(self, schema: str) -> str:
        url = self.url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    pg = Postgres(os.environ.get("DEEPREC_TEST_POSTGRES_URL", PG_DEFAULT_URL))
    try:
        pg.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL at {pg.url.render_as_string()} is unreachable ({exc.__class__.__name__}: {exc})"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run the suite on PostgreSQL")
        pytest.skip(reason + "; set DEEPREC_TEST_POSTGRES_URL or start PostgreSQL to run these cases")
    return pg


@pytest.fixture(scope="session")
def pg_schema_url(postgres: Postgres) -> Iterator[str]:
    """A migrated schema that lives for the whole test session."""
    schema = f"deeprec_test_{os.getpid()}_{secrets.token_hex(3)}"
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    url = postgres.schema_url(schema)
    try:
        upgrade(_hermetic(url, Path(".")))
        yield url
    finally:
        postgres.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "deeprec.db"
    upgrade(_hermetic(f"sqlite:///{path}", path.parent))
    return path


def _truncate_all(postgres: Postgres, url: str) -> None:
    schema = make_url(url).query["options"].split("=", 1)[1]  # type: ignore[union-attr]
    tables = postgres.execute(
        f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' AND tablename <> 'alembic_version'"
    )
    if tables:
        names = ", ".join(f'"{schema}"."{t}"' for (t,) in tables)
        postgres.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    for (table,) in tables:  # the one-row counters the migrations create (0003, 0004), as a migrated database has
        if table in COUNTER_TABLES:
            postgres.execute(f'INSERT INTO "{schema}"."{table}" (id, count) VALUES (1, 0)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "deeprec.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_schema_url")
    _truncate_all(request.getfixturevalue("postgres"), url)
    return url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    postgres: Postgres = request.getfixturevalue("postgres")
    schema = f"deeprec_empty_{os.getpid()}_{secrets.token_hex(3)}"
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield postgres.schema_url(schema)
    finally:
        postgres.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """make_settings(**overrides) -> hermetic Settings on db_url."""
    return lambda **overrides: _hermetic(db_url, tmp_path, **overrides)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with make_sessionmaker(engine)() as sess:
        yield sess


def _create_app(settings: Settings) -> FastAPI:
    from app.main import create_app  # imported here so suites without the API stay light

    return create_app(settings)


def _test_client(app: FastAPI) -> TestClient:
    from fastapi.testclient import TestClient

    return TestClient(app)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return _create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with _test_client(app) as c:
        yield c


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """make_client(**overrides) -> a running TestClient on settings with those overrides."""
    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(_test_client(_create_app(make_settings(**overrides))))


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model store every serving and API test reads (tests/serving/support.py): trained once per run."""
    from tests.serving import support  # imported here: suites without models stay light

    return support.trained_store(tmp_path_factory)
