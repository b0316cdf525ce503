"""POST /v1/interactions and GET /v1/users/{id}/interactions on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient


def post(client: TestClient, rows: list[dict[str, Any]], **kw: Any) -> Any:
    return client.post("/v1/interactions", json={"interactions": rows}, **kw)


def history(client: TestClient, user: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/users/{user}/interactions", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()["interactions"]


def test_batch_creates_users_and_items(client: TestClient) -> None:
    rows = [
        {"user_id": "u1", "item_id": "i1", "rating": 4.5},
        {"user_id": "u1", "item_id": "i2", "type": "click"},
        {"user_id": 7, "item_id": 99, "type": "purchase", "rating": 3},
    ]
    r = post(client, rows)
    assert r.status_code == 200 and r.json() == {"inserted": 3, "duplicates": 0}
    assert client.get("/v1/users/u1").json()["interactions"] == 2
    assert client.get("/v1/users/7").json()["interactions"] == 1
    assert client.get("/v1/items/99").json()["interactions"] == 1
    seen = {(e["item_id"], e["type"], e["rating"]) for e in history(client, "u1")}
    assert seen == {("i1", "rating", 4.5), ("i2", "click", None)}
    assert history(client, "7")[0]["type"] == "purchase"


def test_timestamps_iso_or_unix_default_now(client: TestClient) -> None:
    rows = [
        {"user_id": "u", "item_id": "a", "timestamp": "2024-05-01T12:00:00Z"},
        {"user_id": "u", "item_id": "b", "timestamp": "2024-05-01T14:00:00+02:00"},
        {"user_id": "u", "item_id": "c", "timestamp": "2024-05-01T12:00:00"},
        {"user_id": "u", "item_id": "d", "timestamp": 1714564800},
        {"user_id": "u", "item_id": "e", "timestamp": 1714564800.25},
        {"user_id": "u", "item_id": "f", "timestamp": "1714564800"},
    ]
    before = datetime.now(UTC)
    assert post(client, rows + [{"user_id": "u", "item_id": "now"}]).status_code == 200
    after = datetime.now(UTC)
    got = {e["item_id"]: datetime.fromisoformat(e["timestamp"]) for e in history(client, "u")}
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert {got[k] for k in "abcdf"} == {noon}
    assert got["e"] == noon.replace(microsecond=250_000)
    assert before.replace(microsecond=0) <= got["now"] <= after


def test_resending_event_ids_stores_nothing_twice(client: TestClient) -> None:
    rows = [{"user_id": "u", "item_id": f"i{k}", "rating": 3, "event_id": f"ev-{k}"} for k in range(5)]
    assert post(client, rows).json() == {"inserted": 5, "duplicates": 0}
    assert post(client, rows).json() == {"inserted": 0, "duplicates": 5}
    extra = [{"user_id": "u", "item_id": "i9", "rating": 2, "event_id": "ev-9"}]
    assert post(client, rows[:2] + extra + extra).json() == {"inserted": 1, "duplicates": 3}
    assert client.get("/v1/users/u").json()["interactions"] == 6


BAD_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("rating", {"rating": 7.0}, "interactions[3].rating: 7.0 outside the rating scale 0.5-5.0"),
    ("rating", {"rating": 0.0}, "interactions[3].rating: 0.0 outside the rating scale 0.5-5.0"),
    ("rating", {"rating": "nan"}, "interactions[3].rating: must be a finite number, got nan"),
    ("rating", {"rating": "inf"}, "interactions[3].rating: must be a finite number, got inf"),
    ("rating", {"rating": "-Infinity"}, "interactions[3].rating: must be a finite number, got -inf"),
    ("rating", {"type": "rating", "rating": None}, "interactions[3].rating: required when type is 'rating'"),
    ("user_id", {"user_id": ""}, "interactions[3].user_id: empty id"),
    ("user_id", {"user_id": "   "}, "interactions[3].user_id: empty id"),
    ("item_id", {"item_id": "x" * 257}, "interactions[3].item_id: id longer than 256 characters (257)"),
    ("event_id", {"event_id": "e" * 300}, "interactions[3].event_id: id longer than 256 characters (300)"),
    ("user_id", {"user_id": "a\x00b"}, "interactions[3].user_id: id contains a NUL character"),
    ("timestamp", {"timestamp": "2999-01-01T00:00:00Z"}, "interactions[3].timestamp: 2999-01-01T00:00:00+00:00 is"),
    ("timestamp", {"timestamp": 1714564800000}, "interactions[3].timestamp: timestamp 1.71456e+12 out of range"),
    ("timestamp", {"timestamp": "last tuesday"}, "interactions[3].timestamp: timestamp 'last tuesday' is neither"),
    ("type", {"type": "teleport"}, "interactions[3].type: unknown event type 'teleport'; expected one of rating"),
    ("item_id", {"item_id": None}, "interactions[3].item_id: "),
    ("raiting", {"raiting": 4}, "interactions[3].raiting: extra inputs are not permitted"),
]


@pytest.mark.parametrize(("field", "change", "message"), BAD_ROWS, ids=[m.split(": ")[1][:30] for *_, m in BAD_ROWS])
def test_bad_row_rejects_the_whole_batch(client: TestClient, field: str, change: dict[str, Any], message: str) -> None:
    rows: list[dict[str, Any]] = [{"user_id": f"u{k}", "item_id": f"i{k}", "rating": 4} for k in range(5)]
    rows[3] = {**rows[3], **change}
    r = post(client, rows)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"].startswith(message), body
    assert body["errors"][0]["field"] == f"interactions[3].{field}" and body["errors"][0]["index"] == 3
    assert client.get("/v1/users/u0").status_code == 404  # nothing of the batch was stored
    assert client.get("/v1/items/i0").status_code == 404


def test_lone_surrogate_is_422_not_500(client: TestClient) -> None:
    body = b'{"interactions": [{"user_id": "u", "item_id": "\\ud800", "type": "view"}]}'  # valid JSON, not UTF-8
    r = client.post("/v1/interactions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"] == "interactions[0].item_id: id is not valid Unicode (a lone surrogate)"


def test_every_bad_row_is_reported(client: TestClient) -> None:
    rows = [{"user_id": "u", "item_id": "i", "rating": r} for r in (4, 9, 3, -1, 0.5)]
    errors = post(client, rows).json()["errors"]
    assert [(e["field"], e["index"]) for e in errors] == [("interactions[1].rating", 1), ("interactions[3].rating", 3)]


def test_batch_limit(client: TestClient, make_client: Callable[..., TestClient]) -> None:
    rows = [{"user_id": f"u{k % 97}", "item_id": f"i{k % 89}", "type": "view"} for k in range(10_001)]
    r = post(client, rows)
    assert r.status_code == 422 and r.json()["detail"] == "interactions: 10001 events; at most 10000 per call"
    assert post(client, rows[:10_000]).json() == {"inserted": 10_000, "duplicates": 0}
    small = make_client(max_batch=2)
    assert post(small, rows[:3]).status_code == 422 and post(small, rows[:2]).status_code == 200


def test_rating_scale_comes_from_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rating_min=1, rating_max=10)
    assert post(client, [{"user_id": "u", "item_id": "i", "rating": 7}]).status_code == 200
    r = post(client, [{"user_id": "u", "item_id": "i", "rating": 0.5}])
    assert r.json()["detail"] == "interactions[0].rating: 0.5 outside the rating scale 1.0-10.0"


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b"{not json", {"content-type": "application/json"}, "body: request body is not valid JSON: "),
        (b'{"interactions": [', {"content-type": "application/json"}, "body: request body is not valid JSON: "),
        (b"user,item\nu1,i1", {"content-type": "text/csv"}, "body: request body must be JSON sent as Content-Type"),
        (b"", {}, "body: request body is required: a JSON object"),
        (b"[1, 2]", {"content-type": "application/json"}, "body: request body must be a JSON object, got list"),
        (b'{"interactions": 5}', {"content-type": "application/json"}, "interactions: Input should be a valid list"),
        (b'{"events": []}', {"content-type": "application/json"}, "interactions: field required"),
    ],
)
def test_body_that_is_not_a_batch(client: TestClient, content: bytes, headers: dict[str, str], message: str) -> None:
    r = client.post("/v1/interactions", content=content, headers=headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
    assert r.json()["detail"].startswith(message), r.json()


def test_history_pages_newest_first(client: TestClient) -> None:
    rows = [{"user_id": "u", "item_id": f"i{k}", "type": "view", "timestamp": 1_700_000_000 + k} for k in range(12)]
    rows += [{"user_id": "other", "item_id": "i0", "type": "view"}]
    post(client, rows)
    items, cursor, sizes = [], None, []
    while True:
        params: dict[str, Any] = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/users/u/interactions", params=params).json()
        sizes.append(len(page["interactions"]))
        items += [e["item_id"] for e in page["interactions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [5, 5, 2] and items == [f"i{k}" for k in reversed(range(12))]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=0", "limit: Input should be greater than or equal to 1"),
        ("limit=1001", "limit: Input should be less than or equal to 1000"),
        ("limit=ten", "limit: Input should be a valid integer"),
        ("cursor=bogus", "cursor: not a cursor handed out by this endpoint"),
    ],
)
def test_history_bad_query(client: TestClient, query: str, message: str) -> None:
    post(client, [{"user_id": "u", "item_id": "i", "type": "view"}])
    r = client.get(f"/v1/users/u/interactions?{query}")
    assert r.status_code == 422 and r.json()["detail"].startswith(message), r.json()


def test_history_of_unknown_user_is_404(client: TestClient) -> None:
    r = client.get("/v1/users/ghost/interactions")
    assert r.status_code == 404 and r.json() == {"detail": "user 'ghost' not found"}


def test_no_500_on_odd_but_valid_input(client: TestClient) -> None:
    rows = [
        {"user_id": "ユーザー", "item_id": "i'; DROP TABLE item;--", "rating": 5},
        {"user_id": "u" * 256, "item_id": "\u00e9\u00e8", "type": "like", "timestamp": 0},
        {"user_id": "x", "item_id": "y", "rating": "4.5", "timestamp": time.time()},
    ]
    assert post(client, rows).json() == {"inserted": 3, "duplicates": 0}
    assert history(client, "ユーザー")[0]["item_id"] == "i'; DROP TABLE item;--"


GARBAGE = [
    b'{"interactions": [null]}',
    b'{"interactions": [{"user_id": {}, "item_id": []}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "rating": []}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "timestamp": {}}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "rating": 1e400}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "timestamp": 1e400}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "timestamp": -1e15}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "timestamp": "9999-12-31T23:59:59+14:00"}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "rating": true}]}',
    b'{"interactions": [{"user_id": "a", "item_id": "b", "event_id": ""}]}',
    b"\xff\xfe",
    b'{"interactions": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("body", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_422_never_500(client: TestClient, body: bytes) -> None:
    r = client.post("/v1/interactions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"], r.text
