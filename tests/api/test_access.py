"""Every route against every key scope, from one table: a route that is added without a decision here
fails ``test_every_route_has_a_decision`` (issue 16, "Reads are open to anyone: close them")."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api import access
from app.config import Settings

# (method, path template) -> the scope it needs; None: open to anyone
ACCESS: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): "read",
    ("GET", "/v1/users/{user_id}/recommendations"): "read",
    ("POST", "/v1/predict"): "read",
    ("GET", "/v1/users/{user_id}/next-items"): "read",
    ("POST", "/v1/sessions/next-items"): "read",
    ("GET", "/v1/items/{item_id}/similar"): "read",
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{name}/versions"): "read",
    ("GET", "/v1/users/{user_id}/interactions"): "read",
    ("GET", "/v1/items/{item_id}"): "read",
    ("GET", "/v1/users/{user_id}"): "read",
    ("GET", "/v1/items"): "read",
    ("GET", "/v1/users"): "read",
    ("GET", "/v1/stats"): "read",
    ("GET", "/v1/stats/service"): "read",
    ("POST", "/v1/interactions"): "write",
    ("POST", "/v1/items"): "write",
    ("PUT", "/v1/items/{item_id}"): "write",
    ("PUT", "/v1/users/{user_id}"): "write",
    ("DELETE", "/v1/users/{user_id}"): "write",
    ("POST", "/v1/train"): "admin",
    ("GET", "/v1/jobs"): "admin",
    ("GET", "/v1/jobs/{job_id}"): "admin",
    ("POST", "/v1/jobs/{job_id}/cancel"): "admin",
    ("POST", "/v1/models/{name}/versions/{version}/activate"): "admin",
}
KEYS = {"admin": "k-admin", "write": "k-write", "read": "k-read"}
RANK = {"read": 0, "write": 1, "admin": 2}
DOCS = ("/openapi.json", "/docs", "/redoc", "/docs/assets/swagger-ui.css")
CONSOLE = ("/", "/console/", "/console/js/app.js")  # pages and assets only: the data calls carry the key


def _keyed(make_client: Callable[..., TestClient], **overrides: Any) -> TestClient:
    return make_client(api_key=KEYS["admin"], api_keys=f"read:{KEYS['read']},write:{KEYS['write']}", **overrides)


def _call(client: TestClient, method: str, template: str, key: str | None) -> Any:
    path = template.format(user_id="u1", item_id="i1", name="mf", version="v1", job_id=1)
    headers = {"X-API-Key": key} if key is not None else {}
    body = {} if method in ("POST", "PUT") else None
    return client.request(method, path, json=body, headers=headers)


def test_every_route_has_a_decision(app) -> None:
    """The app's operations are exactly the table's, and the OpenAPI document asks for the key on each
    route the table closes."""
    spec = app.openapi()
    operations = {
        (m.upper(), p): bool(op.get("security")) for p, item in spec["paths"].items() for m, op in item.items()
    }
    assert set(operations) == set(ACCESS), "decide the access of new routes in ACCESS"
    assert {op for op, secured in operations.items() if not secured} == {op for op, s in ACCESS.items() if s is None}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # access is decided before any database work
def test_every_route_against_every_scope(make_client: Callable[..., TestClient]) -> None:
    client = _keyed(make_client)
    for (method, template), needed in ACCESS.items():
        for who, key in [("none", None), ("wrong", "nope"), *KEYS.items()]:
            r = _call(client, method, template, key)
            if needed is None or (who in RANK and RANK[who] >= RANK[needed]):
                assert r.status_code not in (401, 403), (method, template, who, r.status_code, r.text)
            else:
                want = 403 if who in RANK else 401
                assert r.status_code == want, (method, template, who, r.status_code, r.text)
                assert set(r.json()) == {"detail"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_without_keys_every_route_is_open(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    for method, template in ACCESS:
        assert _call(client, method, template, None).status_code not in (401, 403), (method, template)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_single_key_setting_is_an_admin_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="legacy")
    for method, template in ACCESS:
        assert _call(client, method, template, "legacy").status_code not in (401, 403), (method, template)
    assert _call(client, "GET", "/v1/users/{user_id}", None).status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_are_open_unless_closed_by_the_setting(make_client: Callable[..., TestClient]) -> None:
    opened = _keyed(make_client)
    assert all(opened.get(path).status_code == 200 for path in DOCS)
    closed = _keyed(make_client, open_docs=False)
    assert all(closed.get(path).status_code == 401 for path in DOCS)
    assert all(closed.get(path, headers={"X-API-Key": KEYS["read"]}).status_code == 200 for path in DOCS)
    assert closed.get("/healthz").status_code == 200
    assert all(closed.get(path).status_code == 200 for path in CONSOLE)
    assert closed.get("/v1/stats").status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_on_their_own_port_need_no_key(make_client: Callable[..., TestClient]) -> None:
    port = _free_port()
    client = _keyed(make_client, metrics_port=port)
    assert client.get("/metrics").status_code == 401
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200 and b"deeprec_http_requests_total" in r.read()


def test_scoped_keys_are_parsed_and_bad_ones_refused() -> None:
    s = Settings(_env_file=None, api_key="a", api_keys=" read:r1, read:r2 ,write:w")  # type: ignore[call-arg]
    assert s.key_scopes() == {"a": "admin", "r1": "read", "r2": "read", "w": "write"}
    for bad in ("reader:x", "read:", "read", "read:a"):  # unknown scope, no key, no colon, a key given two scopes
        with pytest.raises(ValueError, match="DEEPREC_API_KEYS"):
            Settings(_env_file=None, api_key="a", api_keys=bad)  # type: ignore[call-arg]
    assert Settings(_env_file=None).key_scopes() == {}  # type: ignore[call-arg]


def test_a_key_is_compared_with_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constant time: the answer never depends on where (or whether) the key sits in the list."""
    ring = access.Keyring({"k1": "read", "k2": "write", "k3": "admin"})
    calls: list[int] = []
    real = access.hmac.compare_digest
    monkeypatch.setattr(access.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    for key, scope in ((b"k1", "read"), (b"k3", "admin"), (b"nope", None), (b"", None)):
        calls.clear()
        assert ring.scope_of(key) == scope
        assert len(calls) == 3
