"""GET /v1/items and GET /v1/users on SQLite and PostgreSQL: search, category, ids, keyset pages, 422s."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

ITEMS = [
    {"item_id": "i1", "title": "Golden Harbor (2019)", "categories": ["Comedy", "Romance"]},
    {"item_id": "i2", "title": "Silent Harbor (2001)", "categories": ["Drama"]},
    {"item_id": "i3", "title": "100% Wild_Summer", "categories": ["Comedy"]},
    {"item_id": "i4", "title": "Iron Engine", "categories": ["Sci-Fi", "Comedy"], "active": False},
    {"item_id": "x5", "title": None, "categories": []},
    {"item_id": "i6", "title": "Quiet Orchard", "categories": ["Comedy Drama"]},
]


@pytest.fixture
def catalogue(client: TestClient) -> TestClient:
    for item in ITEMS:  # one call each: created in this order
        body = {k: v for k, v in item.items() if v is not None}
        assert client.post("/v1/items", json={"items": [body]}).status_code == 200
    for user in ("u1", "u2", "u10", "anna"):
        assert client.put(f"/v1/users/{user}", json={"attributes": {"name": user}}).status_code == 200
    return client


def ids(client: TestClient, query: str) -> list[str]:
    r = client.get(f"/v1/items?{query}")
    assert r.status_code == 200, r.text
    return [it["item_id"] for it in r.json()["items"]]


def test_search_matches_title_or_id_in_any_case(catalogue: TestClient) -> None:
    assert ids(catalogue, "q=HARBOR") == ["i1", "i2"]
    assert ids(catalogue, "q=x5") == ["x5"]
    # LIKE wildcards in the text are matched literally
    assert ids(catalogue, "q=%25") == ["i3"] and ids(catalogue, "q=n_engine") == []
    assert ids(catalogue, "q=wild_summer") == ["i3"] and ids(catalogue, "q=n engine") == ["i4"]
    assert ids(catalogue, "q=") == ["i1", "i2", "i3", "i4", "x5", "i6"]  # empty: no filter


def test_category_is_an_exact_member_of_the_list(catalogue: TestClient) -> None:
    assert ids(catalogue, "category=Comedy") == ["i1", "i3", "i4"]  # not "Comedy Drama"
    assert ids(catalogue, "category=Comedy&q=iron") == ["i4"]
    assert ids(catalogue, "category=comedy") == [] and ids(catalogue, "category=Western") == []


def test_ids_and_the_fields_of_an_item(catalogue: TestClient) -> None:
    assert ids(catalogue, "ids=i6,i1,nope,i1") == ["i1", "i6"]
    got = catalogue.get("/v1/items?ids=i4").json()["items"][0]
    assert got["title"] == "Iron Engine" and got["categories"] == ["Sci-Fi", "Comedy"] and got["active"] is False
    assert got["attributes"] == {} and got["created_at"]


def test_pages_walk_every_item_once(catalogue: TestClient) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = catalogue.get("/v1/items", params={"limit": 4, "cursor": cursor}).json()
        seen += [it["item_id"] for it in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["i1", "i2", "i3", "i4", "x5", "i6"] and pages == 2
    first = catalogue.get("/v1/items", params={"limit": 1, "category": "Comedy"}).json()
    second = catalogue.get("/v1/items", params={"limit": 1, "category": "Comedy", "cursor": first["next_cursor"]})
    assert [it["item_id"] for it in second.json()["items"]] == ["i3"]
    exact = catalogue.get("/v1/items", params={"limit": 6}).json()
    assert exact["next_cursor"] is None  # a full last page says so


def test_users_search_and_pages(catalogue: TestClient) -> None:
    body = catalogue.get("/v1/users", params={"q": "U1"}).json()
    assert [u["user_id"] for u in body["users"]] == ["u1", "u10"] and body["next_cursor"] is None
    assert body["users"][0]["attributes"] == {"name": "u1"}
    page = catalogue.get("/v1/users", params={"limit": 3}).json()
    rest = catalogue.get("/v1/users", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [u["user_id"] for u in page["users"] + rest["users"]] == ["u1", "u2", "u10", "anna"]


@pytest.mark.parametrize(
    "query, field",
    [
        ("cursor=bm9wZQ", "cursor"),  # base64 of "nope"
        ("cursor=%25%25", "cursor"),
        ("cursor=aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "cursor"),  # id:99999999999999999999, past BIGINT
        ("q=a%00b", "q"),
        ("category=%00", "category"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("ids=" + ",".join(f"i{n}" for n in range(501)), "ids"),
        ("q=" + "x" * 201, "q"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(catalogue: TestClient, query: str, field: str) -> None:
    r = catalogue.get(f"/v1/items?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == field


def test_users_bad_cursor_is_422(catalogue: TestClient) -> None:
    r = catalogue.get("/v1/users?cursor=bm9wZQ")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"
