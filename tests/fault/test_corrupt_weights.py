"""The active version's weights corrupted, then a restart: readiness and /v1/models name the model that
failed to load and why, and a request naming that model answers 503 with the reason (issue 16 item 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.session import make_engine, make_sessionmaker
from tests.conftest import _hermetic
from tests.fault.support import Service
from tests.jobs.support import run_job, seed_database, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restarted(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service started on a store whose active mf weights were truncated; and that mf version."""
    tmp = tmp_path_factory.mktemp("corrupt")
    (tmp / "deeprec.db").write_bytes(sqlite_template.read_bytes())
    settings = _hermetic(f"sqlite:///{tmp / 'deeprec.db'}", tmp)
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        seed_database(session)
        version = run_job(settings, session, models=("popularity", "mf"))["mf"]["version"]
    engine.dispose()
    weights = settings.models_dir / "mf" / version / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    service = Service(settings, tmp / "serve.log").start(ready=False)
    wait_for(lambda: "loading" not in service.http.get("/readyz").text, 120, 0.1, "the startup load")
    yield service, version
    service.stop()


def test_readiness_and_models_name_the_model_that_failed(restarted: tuple[Service, str]) -> None:
    service, version = restarted
    r = service.http.get("/readyz")
    assert r.status_code == 503 and r.headers["retry-after"]
    models = r.json()["checks"]["models"]
    assert not models["ok"] and models["detail"].startswith("mf failed to load") and version in models["detail"]
    mf = next(m for m in service.http.get("/v1/models").json()["models"] if m["name"] == "mf")
    assert mf["loaded"] is False and mf["active_version"] == version and "truncated" in mf["error"]
    popularity = next(m for m in service.http.get("/v1/models").json()["models"] if m["name"] == "popularity")
    assert popularity["loaded"] and popularity["error"] is None


def test_a_request_naming_the_failed_model_is_a_503_with_the_reason(restarted: tuple[Service, str]) -> None:
    service, _ = restarted
    r = service.http.get("/v1/users/u1/recommendations", params={"model": "mf", "n": 5})
    assert r.status_code == 503 and "truncated" in r.text, r.text
