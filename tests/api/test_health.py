"""/healthz, /readyz (database and migrations, extensible checks) and the OpenAPI examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.routes.health import NotReady
from app.config import Settings
from app.db.migrations import downgrade

ENDPOINTS = {
    ("post", "/v1/interactions"),
    ("get", "/v1/users/{user_id}/interactions"),
    ("post", "/v1/items"),
    ("put", "/v1/items/{item_id}"),
    ("get", "/v1/items/{item_id}"),
    ("put", "/v1/users/{user_id}"),
    ("get", "/v1/users/{user_id}"),
    ("delete", "/v1/users/{user_id}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    checks = client.get("/readyz").json()["checks"]
    assert checks["database"]["ok"] and checks["migrations"]["ok"]
    assert checks["migrations"]["detail"].startswith("at head")


def test_readyz_is_503_when_migrations_are_behind(settings: Settings, make_client: Callable[..., TestClient]) -> None:
    downgrade(settings, "base")
    client = make_client(migrate_on_start=False)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    migrations = r.json()["checks"]["migrations"]
    assert not migrations["ok"] and "deeprec db upgrade" in migrations["detail"]


def test_teammates_can_add_ready_checks(app: FastAPI, client: TestClient) -> None:
    def check_models(_app: FastAPI) -> str:
        raise NotReady("models still loading")

    app.state.ready_checks["models_test"] = check_models
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["checks"]["models_test"] == {"ok": False, "detail": "models still loading"}
    app.state.ready_checks["models_test"] = lambda _app: "3 models"
    assert client.get("/readyz").json()["checks"]["models_test"] == {"ok": True, "detail": "3 models"}


def _schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else node


def test_docs_show_an_example_for_every_endpoint(app: FastAPI) -> None:
    spec = app.openapi()
    for method, path in ENDPOINTS:
        op = spec["paths"][path][method]
        body = op.get("requestBody")
        if body:
            assert _schema(spec, body["content"]["application/json"]["schema"]).get("examples"), (method, path)
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert _schema(spec, ok).get("examples"), (method, path)
        assert op.get("description") or op.get("summary"), (method, path)
