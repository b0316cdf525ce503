"""The FastAPI application: create_app(settings) and a lifespan that starts components in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.api.access import Keyring
from app.api.errors import CatchAll, install_error_handlers
from app.api.guard import RequestGuard
from app.api.jobs_app import start_embedded_worker, start_hot_swap
from app.api.observability import start_metrics_server
from app.api.openapi import install_openapi
from app.api.response_cache import ResponseCache
from app.api.routes import browse, catalog, health, interactions, jobs, stats
from app.api.serving_app import install_serving, start_serving
from app.config import Settings, get_settings
from app.console.web import install_console, install_docs
from app.db.migrations import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.logs import configure_logging

log = logging.getLogger(__name__)


def start_database(app: FastAPI, stack: ExitStack) -> None:
    """Migrate (DEEPREC_MIGRATE_ON_START), then app.state.engine and app.state.sessionmaker."""
    settings: Settings = app.state.settings
    if settings.migrate_on_start:
        upgrade(settings)
    engine = make_engine(settings)
    stack.callback(engine.dispose)
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)


# Started in this order, stopped in reverse. Each gets the app and an ExitStack for its cleanup,
# and may add a readiness check to app.state.ready_checks. The model registry and the embedded
# worker go after the database.
COMPONENTS: tuple[Callable[[FastAPI, ExitStack], None], ...] = (
    start_metrics_server,
    start_database,
    start_serving,
    start_hot_swap,
    start_embedded_worker,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with ExitStack() as stack:
        for start in COMPONENTS:
            start(app, stack)
        app.openapi()  # built once now: the request guard reads it, and no client request pays for it
        yield


def include_routers(app: FastAPI) -> None:
    """Every router of the service, in one place (the serving routers: ``install_serving``). Each route
    says which key scope it needs (``app.api.access``); the health checks are open. Each router carries
    its own ``/v1`` prefix: a route then knows its full path, which the request metrics label it by."""
    app.include_router(health.router)
    for module in (interactions, catalog, browse, jobs, stats):
        app.include_router(module.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("app").setLevel(settings.log_level.upper())
    app = FastAPI(
        title="DeepRec",
        version=__version__,
        summary="Deep recommenders behind an HTTP API",
        description="When DEEPREC_API_KEY or DEEPREC_API_KEYS is set, every /v1 route needs the X-API-Key "
        "header: a read key for reads and recommendations, a write key for ingest, an admin key for training, "
        "jobs and versions. /healthz and /readyz are open.",
        lifespan=lifespan,
        redirect_slashes=False,  # a slash redirect built its Location from the client's Host header
        docs_url=None,  # install_docs serves Swagger UI from the package instead of a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = Keyring(settings.key_scopes())
    if not app.state.keyring.enabled:
        log.info("no API key configured: every route is open to anyone who can reach this port")
    app.state.ready_checks = health.default_ready_checks()
    install_error_handlers(app)
    app.add_middleware(ResponseCache)  # innermost of ours: repeated list requests, after the checks below
    app.add_middleware(RequestGuard)  # key, query and body size, before the body is read
    app.add_middleware(CatchAll)
    install_serving(app)  # first: routes are matched in order, and the serving routes take most requests
    include_routers(app)
    install_openapi(app)
    install_docs(app)
    install_console(app)
    return app
