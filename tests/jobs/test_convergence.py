"""Every API process converges on model_version or says why not: a refused version is tried again when it
is activated again or its files change (issue 16 item 8), readiness shows a model that failed to load
(item 7's readiness part), and a job says when its versions are live in this process (item 12)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.config import Settings
from app.jobs.versions import activate_version
from app.serving.registry import ModelRegistry
from tests.jobs.support import FAST, run_job, seed_database, wait_for


def started(make_client: Callable[..., TestClient]) -> TestClient:
    """A client whose models are loaded (the startup load runs in a thread) and whose poll waits for the test."""
    client = make_client(model_poll_interval_s=3600.0)
    wait_for(lambda: client.app.state.registry.ready, 60, what="the startup load")
    return client


def serving(client: TestClient, name: str = "mf") -> str | None:
    return client.app.state.registry.models.versions().get(name)


def truncate(settings: Settings, version: str) -> tuple[Path, bytes]:
    weights = settings.models_dir / "mf" / version / "weights.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:64])
    return weights, original


def test_a_refused_version_is_loaded_once_its_files_are_repaired(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    seed_database(session)
    good = run_job(settings, session)["mf"]["version"]
    bad = run_job(settings, session, promote="never")["mf"]["version"]
    client = started(make_client)
    poller = client.app.state.version_poller
    weights, original = truncate(settings, bad)
    activate_version(session=session, name="mf", version=bad)  # as another process would
    poller.check()
    assert serving(client) == good and "truncated" in client.app.state.registry.errors["mf"]
    assert not poller.check() and serving(client) == good  # unchanged files: not loaded again on every poll

    weights.write_bytes(original)  # repaired in place
    assert poller.check()
    assert serving(client) == bad and "mf" not in client.app.state.registry.errors


def test_a_refused_version_is_tried_again_when_activated_again(
    make_client: Callable[..., TestClient], settings: Settings, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's sequence: V1 refused; V2 activated; V1 activated again: the process serves V1."""
    seed_database(session)
    v1 = run_job(settings, session, promote="never")["mf"]["version"]
    v2 = run_job(settings, session, promote="never")["mf"]["version"]
    activate_version(session=session, name="mf", version=v2)
    client = started(make_client)
    poller = client.app.state.version_poller
    real = ModelRegistry.load_version

    def failing(self: ModelRegistry, name: str, version: str, *args):  # a load that fails once, files untouched
        if version == v1:
            raise RuntimeError("CUDA out of memory")
        return real(self, name, version, *args)

    monkeypatch.setattr(ModelRegistry, "load_version", failing)
    activate_version(session=session, name="mf", version=v1)
    poller.check()
    assert serving(client) == v2
    monkeypatch.setattr(ModelRegistry, "load_version", real)
    assert not poller.check()  # same activation, same files: still refused

    activate_version(session=session, name="mf", version=v2)
    poller.check()
    activate_version(session=session, name="mf", version=v1)  # a new activation: tried again
    assert poller.check()
    assert serving(client) == v1
    assert client.get("/v1/models/mf/versions").json()["active_version"] == v1
    assert next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "mf")["active_version"] == v1


def test_readiness_shows_a_model_that_failed_to_load(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    seed_database(session)
    v1 = run_job(settings, session, models=("popularity", "mf"))["mf"]["version"]
    truncate(settings, v1)
    client = started(make_client)  # a restart: the active mf cannot be loaded and nothing of mf serves
    r = client.get("/readyz")
    assert r.status_code == 503
    detail = r.json()["checks"]["models"]["detail"]
    assert detail.startswith("mf failed to load") and "truncated" in detail
    mf = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "mf")
    assert not mf["loaded"] and "truncated" in mf["error"]


def test_readiness_names_a_model_kept_on_an_older_version(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    seed_database(session)
    good = run_job(settings, session)["mf"]["version"]
    bad = run_job(settings, session, promote="never")["mf"]["version"]
    client = started(make_client)
    truncate(settings, bad)
    activate_version(session=session, name="mf", version=bad)
    client.app.state.version_poller.check()
    r = client.get("/readyz")
    assert r.status_code == 200  # the older version keeps serving
    assert f"mf still on {good}: its active version failed to load" in r.json()["checks"]["models"]["detail"]


def test_a_job_is_live_once_this_process_serves_its_versions(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    seed_database(session)
    client = started(make_client)
    client.app.state.hot_swap.stop()  # no nudge either: the poll happens when the test says
    job_id = client.post("/v1/train", json={"models": ["mf"], "params": FAST, "promote": "always"}).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}").json()["live"] is None  # queued
    from app.jobs.worker import Worker

    worker = Worker(settings)
    assert worker.run_once() == "succeeded"
    worker.engine.dispose()
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["live"] is False
    assert client.get("/v1/jobs").json()["jobs"][0]["live"] is False
    client.app.state.version_poller.check()
    assert client.get(f"/v1/jobs/{job_id}").json()["live"] is True
    version = job["result"]["versions"][0]["version"]
    assert client.get("/v1/users/u1/recommendations?model=mf").json()["version"] == version

    never = run_job(settings, session, promote="never")  # activates nothing: nothing to wait for
    assert never["mf"]["promoted"] is False
    assert client.get("/v1/jobs").json()["jobs"][0]["live"] is True


def test_the_store_folder_can_vanish_without_breaking_the_poll(
    make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    seed_database(session)
    good = run_job(settings, session)["mf"]["version"]
    gone = run_job(settings, session, promote="never")["mf"]["version"]
    client = started(make_client)
    shutil.rmtree(settings.models_dir / "mf" / gone)
    activate_version(session=session, name="mf", version=gone)
    client.app.state.version_poller.check()
    assert not client.app.state.version_poller.check()
    assert serving(client) == good
