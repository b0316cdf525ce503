"""Fixtures of the browser tests: a real service (uvicorn in a subprocess, embedded worker on) on a small
demo data set with quick models, on SQLite and on PostgreSQL, and headless Chromium from Debian driven by
Playwright (never a browser download). Without Chromium the tests skip, or fail when CI is set.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.migrations import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.ingest.demo import DemoConfig, load_demo
from app.jobs import queue
from app.jobs.worker import Worker
from tests.conftest import Postgres
from tests.jobs.support import ROOT, stop, wait_for

ADMIN_KEY = "console-test-admin-key"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOTS = ROOT / "var" / "screenshots"
FIRST_MODELS = ["popularity", "mf", "gru4rec", "sasrec"]
QUICK = {"epochs": 2, "batch_size": 128}


def chromium() -> str:
    """The Debian Chromium, or a skip (a failure in CI) saying how to install it."""
    path = os.environ.get("DEEPREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    problem = None
    if not Path(path).is_file():
        problem = f"Chromium not found at {path}: apt-get install -y chromium chromium-driver"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is missing: pip install -e '.[dev]'"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem + "; CI must run the browser tests")
        pytest.skip(problem)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass(frozen=True)
class Service:
    url: str
    backend: str
    settings: Settings
    log: Path | None = None  # the server's output: its tail goes into a failure message

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log and self.log.is_file() else ""

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(settings: Settings) -> None:
    """Migrate, load a small demo data set and train the first models with a worker in this process."""
    upgrade(settings)
    engine = make_engine(settings)
    try:
        load_demo(
            DemoConfig(users=60, items=50, events=1500, seed=3, span_days=60), settings, make_sessionmaker(engine)
        )
        with make_sessionmaker(engine)() as session:
            queue.enqueue(session=session, models=FIRST_MODELS, params=QUICK, promote="always")
    finally:
        engine.dispose()
    worker = Worker(settings)
    try:
        assert worker.run_once() == "succeeded"
    finally:
        worker.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    chromium()  # no service to start for tests that will skip
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'deeprec.db'}"
    else:
        postgres: Postgres = request.getfixturevalue("postgres")
        schema = f"deeprec_console_{os.getpid()}_{secrets.token_hex(3)}"
        postgres.execute(f'CREATE SCHEMA "{schema}"')
        url = postgres.schema_url(schema)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPREC_")}
    env.update(
        PYTHONPATH=str(ROOT), DEEPREC_DATABASE_URL=url, DEEPREC_MODELS_DIR=str(tmp / "models"), DEEPREC_DEVICE="cpu",
        DEEPREC_API_KEY=ADMIN_KEY, DEEPREC_LOG_LEVEL="WARNING", DEEPREC_TRAIN_THREADS="1",
        DEEPREC_MODEL_POLL_INTERVAL_S="0.3", DEEPREC_JOB_HEARTBEAT_S="0.5", DEEPREC_EMBEDDED_WORKER="true",
    )  # fmt: skip
    settings = Settings(_env_file=None, **{k[8:].lower(): v for k, v in env.items() if k.startswith("DEEPREC_")})  # type: ignore[arg-type]
    log = tmp / "serve.log"
    proc = None
    try:
        _prepare(settings)
        port = _free_port()
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                    cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        svc = Service(f"http://127.0.0.1:{port}", request.param, settings, log)

        def ready() -> bool:
            assert proc is not None and proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 180, 0.2, "the service to be ready")
        yield svc
    finally:
        if proc is not None:
            stop(proc)
        if schema is not None:
            request.getfixturevalue("postgres").execute(f'DROP SCHEMA "{schema}" CASCADE')


class Console:
    """A browser tab on the console that records console errors and uncaught exceptions."""

    def __init__(self, page: Any, service: Service) -> None:
        self.page = page
        self.service = service
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def open(self, name: str, key: str | None = ADMIN_KEY) -> Any:
        """Go to #/name; answer the key dialog when the tab asks (once); wait until the page has loaded."""
        self.page.goto(f"{self.service.url}/console/#/{name}")
        dialog = self.page.locator("#key-dialog[open]")
        if key is not None and dialog.count():
            self.page.fill("#key-input", key)
            self.page.click("#key-save")
        self.page.wait_for_selector(f"#page[data-ready=true][data-page={name.split('?')[0]}]", timeout=30_000)
        return self.page

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.service.backend}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def console(browser: Any, service: Service) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield Console(context.new_page(), service)
    finally:
        context.close()
