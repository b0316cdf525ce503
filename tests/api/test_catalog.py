"""Items and users: upserts, reads, deletion (right to be forgotten), auth, JSON errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient


def test_items_batch_upsert_keeps_fields_left_out(client: TestClient) -> None:
    items = [
        {"item_id": "i1", "title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"], "attributes": {"year": 1979}},
        {"item_id": "i2", "title": "Heat"},
    ]
    assert client.post("/v1/items", json={"items": items}).json() == {"created": 2, "updated": 0}
    update = [{"item_id": "i1", "active": False}, {"item_id": "i3"}]
    assert client.post("/v1/items", json={"items": update}).json() == {"created": 1, "updated": 1}
    got = client.get("/v1/items/i1").json()
    assert got["title"] == "Alien (1979)" and got["categories"] == ["Horror", "Sci-Fi"]
    assert got["attributes"] == {"year": 1979} and got["active"] is False and got["interactions"] == 0
    assert client.get("/v1/items/i3").json()["categories"] == []


def test_put_and_get_item(client: TestClient) -> None:
    r = client.put("/v1/items/m1", json={"title": "Up", "attributes": {"year": 2009, "price": 3.5}})
    assert r.status_code == 200 and r.json()["title"] == "Up" and r.json()["active"] is True
    r = client.put("/v1/items/m1", json={"categories": ["Animation"]})
    assert r.json()["title"] == "Up" and r.json()["categories"] == ["Animation"]
    client.post("/v1/interactions", json={"interactions": [{"user_id": "u", "item_id": "m1", "rating": 5}]})
    got = client.get("/v1/items/m1").json()
    assert got["interactions"] == 1 and got["attributes"] == {"year": 2009, "price": 3.5}
    assert got["created_at"].endswith("Z") or got["created_at"].endswith("+00:00")


def test_unknown_ids_are_json_404(client: TestClient) -> None:
    for path in ("/v1/items/nope", "/v1/users/nope"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["detail"].endswith("'nope' not found")
    r = client.get("/v1/no-such-route")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.patch("/v1/items/x", json={})
    assert r.status_code == 405 and "detail" in r.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"items": [{"item_id": "a"}, {"item_id": ""}]}, "items[1].item_id: empty id"),
        ({"items": [{"item_id": "a", "title": "t" * 1025}]}, "items[0].title: title longer than 1024 characters"),
        ({"items": [{"item_id": "a", "categories": "Drama"}]}, "items[0].categories: Input should be a valid list"),
        ({"items": [{"item_id": "a", "categories": [""]}]}, "items[0].categories[0]: empty category"),
        ({"items": [{"item_id": "a", "attributes": [1]}]}, "items[0].attributes: Input should be a valid dictionary"),
        ({"items": [{"item_id": "a", "attributes": {"t": "x\x00"}}]}, "items[0].attributes: t contains a NUL"),
        ({"items": [{"item_id": "a", "colour": "red"}]}, "items[0].colour: extra inputs are not permitted"),
    ],
)
def test_bad_items_are_422_and_nothing_is_stored(client: TestClient, body: dict[str, Any], message: str) -> None:
    r = client.post("/v1/items", json=body)
    assert r.status_code == 422 and r.json()["detail"].startswith(message), r.json()
    assert client.get("/v1/items/a").status_code == 404


def test_non_finite_attribute_is_422(client: TestClient) -> None:
    as_json = {"content-type": "application/json"}
    raw = b'{"items": [{"item_id": "a", "attributes": {"price": NaN}}]}'
    r = client.post("/v1/items", content=raw, headers=as_json)
    assert r.status_code == 422
    assert r.json()["detail"] == "items[0].attributes: price is nan; JSON numbers must be finite"
    r = client.put("/v1/users/u", content=b'{"attributes": {"a": [1, Infinity]}}', headers=as_json)
    assert r.status_code == 422 and r.json()["detail"] == "attributes: a[1] is inf; JSON numbers must be finite"


def test_items_batch_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_batch=2)
    r = client.post("/v1/items", json={"items": [{"item_id": str(k)} for k in range(3)]})
    assert r.status_code == 422 and r.json()["detail"] == "items: 3 items; at most 2 per call"


def test_users_put_get(client: TestClient) -> None:
    r = client.put("/v1/users/u1", json={"attributes": {"age": 31}})
    assert r.status_code == 200 and r.json()["attributes"] == {"age": 31} and r.json()["interactions"] == 0
    assert client.put("/v1/users/u1", json={}).json()["attributes"] == {"age": 31}
    assert client.put("/v1/users/u1", json={"attributes": {"country": "NZ"}}).json()["attributes"] == {"country": "NZ"}
    assert client.get("/v1/users/u1").json()["user_id"] == "u1"
    r = client.put("/v1/users/" + "x" * 257, json={})
    assert r.status_code == 422 and r.json()["detail"] == "user_id: id longer than 256 characters (257)"


def test_delete_user_forgets_everything_about_them(client: TestClient) -> None:
    rows = [{"user_id": u, "item_id": f"i{k}", "rating": 3} for u in ("gone", "kept") for k in range(4)]
    client.post("/v1/interactions", json={"interactions": rows})
    client.put("/v1/users/gone", json={"attributes": {"email": "x@example.com"}})
    r = client.delete("/v1/users/gone")
    assert r.status_code == 200 and r.json() == {"user_id": "gone", "deleted_interactions": 4}
    assert client.get("/v1/users/gone").status_code == 404
    assert client.get("/v1/users/gone/interactions").status_code == 404
    assert client.get("/v1/users/kept").json()["interactions"] == 4
    assert client.get("/v1/items/i0").json()["interactions"] == 1
    assert client.delete("/v1/users/gone").status_code == 404
    # The id can be used again and starts from nothing.
    client.post("/v1/interactions", json={"interactions": [{"user_id": "gone", "item_id": "i0", "type": "view"}]})
    assert client.get("/v1/users/gone").json() | {"created_at": None} == {
        "user_id": "gone",
        "attributes": {},
        "created_at": None,
        "interactions": 1,
    }


WRITES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/interactions", {"interactions": [{"user_id": "u", "item_id": "i", "rating": 4}]}),
    ("POST", "/v1/items", {"items": [{"item_id": "i"}]}),
    ("PUT", "/v1/items/i", {"title": "T"}),
    ("PUT", "/v1/users/u", {}),
    ("DELETE", "/v1/users/u", None),
]


def test_api_key_guards_every_write(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_key="s3cret")
    for method, path, body in WRITES:
        for headers in ({}, {"X-API-Key": "wrong"}):
            r = client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, r.text)
            assert r.json() == {"detail": "missing or invalid X-API-Key header"}
    key = {"X-API-Key": "s3cret"}
    assert client.get("/v1/users/u", headers=key).status_code == 404  # the rejected writes stored nothing
    for method, path, body in WRITES:
        r = client.request(method, path, json=body, headers=key)
        assert r.status_code == 200, (method, path, r.text)
    assert client.get("/v1/items/i").status_code == 401  # reads need a key too (tests/api/test_access.py)
    assert client.get("/v1/items/i", headers=key).status_code == 200


def test_without_api_key_setting_writes_are_open(client: TestClient) -> None:
    for method, path, body in WRITES:
        assert client.request(method, path, json=body).status_code == 200
