"""Hostile and sloppy input answers a 4xx that names the problem, stores nothing, and never a 5xx
(issue 16 items 1-3, 6, 10, 11), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.fields import ATTRIBUTES_MAX_DEPTH


def nested(depth: int) -> Any:
    """A list holding a list ... ``depth`` levels of arrays around a 1."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def events(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"interactions": list(rows)}


@pytest.mark.parametrize("job_id", [2**63, 2**64 + 5, 10**30])
def test_job_ids_past_64_bits_are_a_422_not_a_500(client: TestClient, job_id: int) -> None:
    for r in (client.get(f"/v1/jobs/{job_id}"), client.post(f"/v1/jobs/{job_id}/cancel")):
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "job_id"
    assert client.get(f"/v1/jobs/{2**63 - 1}").status_code == 404  # the largest id is a plain unknown job


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", -1, "1969-12-31T23:59:59Z"],
)
def test_timestamps_outside_1970_to_9999_utc_are_refused_naming_the_row(client: TestClient, stamp: Any) -> None:
    ok = {"user_id": "u", "item_id": "1", "type": "view", "timestamp": "2024-01-01T00:00:00Z"}
    r = client.post("/v1/interactions", json=events(ok, {**ok, "timestamp": stamp}))
    assert r.status_code == 422, r.text
    assert [(e["field"], e["index"]) for e in r.json()["errors"]] == [("interactions[1].timestamp", 1)]
    assert client.get("/v1/users/u").status_code == 404  # the batch's good row was not stored either


def test_the_unix_epoch_is_the_earliest_timestamp_accepted(client: TestClient) -> None:
    rows = [
        {"user_id": "u", "item_id": "1", "timestamp": t}
        for t in ("1970-01-01T00:00:00Z", 0, "1970-01-01T01:00:00+01:00")
    ]
    assert client.post("/v1/interactions", json=events(*rows)).json() == {"inserted": 3, "duplicates": 0}
    stored = client.get("/v1/users/u/interactions").json()["interactions"]
    assert {e["timestamp"] for e in stored} == {"1970-01-01T00:00:00Z"}


@pytest.mark.parametrize("depth", [ATTRIBUTES_MAX_DEPTH, 300])
def test_attributes_nested_past_the_limit_are_refused_and_not_stored(client: TestClient, depth: int) -> None:
    # {"a": [...]} has one level for the object and depth - 1 for the arrays
    deep = {"a": nested(depth)}
    for r in (
        client.put("/v1/users/deep1", json={"attributes": deep}),
        client.post("/v1/items", json={"items": [{"item_id": "deep1", "attributes": deep}]}),
        client.put("/v1/items/deep1", json={"attributes": deep}),
    ):
        assert r.status_code == 422, r.text
        assert f"more than {ATTRIBUTES_MAX_DEPTH} deep" in r.json()["detail"]
    assert client.get("/v1/users/deep1").status_code == 404
    assert client.get("/v1/items/deep1").status_code == 404


def test_attributes_at_the_depth_limit_are_stored_and_read_back(client: TestClient) -> None:
    deep = {"a": nested(ATTRIBUTES_MAX_DEPTH - 1)}  # exactly the limit
    assert client.put("/v1/users/deep", json={"attributes": deep}).status_code == 200
    assert client.get("/v1/users/deep").json()["attributes"] == deep
    assert client.post("/v1/items", json={"items": [{"item_id": "deep", "attributes": deep}]}).status_code == 200
    assert client.get("/v1/items/deep").json()["attributes"] == deep


def test_json_nested_past_the_parser_is_a_422(client: TestClient) -> None:
    body = '{"attributes": {"a": ' + "[" * 990 + "1" + "]" * 990 + "}}"
    r = client.put("/v1/users/deep2", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert client.get("/v1/users/deep2").status_code == 404


@pytest.mark.parametrize("bad", ["a/b", "/", ".", "..", "a/"])
def test_ids_that_no_url_can_address_are_refused(client: TestClient, bad: str) -> None:
    for r, field in (
        (client.post("/v1/interactions", json=events({"user_id": bad, "item_id": "i"})), "interactions[0].user_id"),
        (client.post("/v1/interactions", json=events({"user_id": "u", "item_id": bad})), "interactions[0].item_id"),
        (client.post("/v1/items", json={"items": [{"item_id": bad}]}), "items[0].item_id"),
    ):
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field
    assert client.get("/v1/users/u").status_code == 404


def test_ids_with_dots_and_escapes_are_stored_and_addressable(client: TestClient) -> None:
    odd = ["a.b", "...", "a b", "50%", "a?b#c", "ünï"]
    r = client.post("/v1/interactions", json=events(*({"user_id": u, "item_id": u} for u in odd)))
    assert r.json() == {"inserted": len(odd), "duplicates": 0}
    from urllib.parse import quote

    for u in odd:
        assert client.get(f"/v1/users/{quote(u, safe='')}").json()["user_id"] == u
        assert client.get(f"/v1/items/{quote(u, safe='')}").json()["item_id"] == u
        assert client.delete(f"/v1/users/{quote(u, safe='')}").json() == {"user_id": u, "deleted_interactions": 1}


def test_event_ids_may_hold_a_slash(client: TestClient) -> None:
    row = {"user_id": "u", "item_id": "i", "event_id": "2024/05/01-7"}
    assert client.post("/v1/interactions", json=events(row)).json() == {"inserted": 1, "duplicates": 0}
    assert client.get("/v1/users/u/interactions").json()["interactions"][0]["event_id"] == "2024/05/01-7"


def test_integer_ids_are_taken_as_digits_and_floats_and_booleans_refused(client: TestClient) -> None:
    ok = client.post("/v1/interactions", json=events({"user_id": 7, "item_id": 99, "event_id": 5}))
    assert ok.json() == {"inserted": 1, "duplicates": 0}
    assert client.get("/v1/users/7/interactions").json()["interactions"][0] | {"timestamp": None} == {
        "item_id": "99", "type": "view", "rating": None, "timestamp": None, "event_id": "5",
    }  # fmt: skip
    for bad in ({"item_id": 99.0}, {"item_id": True}, {"event_id": 1.5}, {"user_id": 2**64}):
        r = client.post("/v1/interactions", json=events({"user_id": "u", "item_id": "i", **bad}))
        assert r.status_code == 422, (bad, r.text)
    r = client.post("/v1/items", json={"items": [{"item_id": "x", "active": 0}]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "items[0].active"
    assert client.post("/v1/items", json={"items": [{"item_id": "x", "title": 5}]}).status_code == 422
    assert client.get("/v1/items/x").status_code == 404


def test_the_documented_schema_states_the_id_and_timestamp_rules(app) -> None:
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    user_id = schemas["InteractionIn"]["properties"]["user_id"]["anyOf"]
    assert {s["type"] for s in user_id} == {"string", "integer"}
    text = next(s for s in user_id if s["type"] == "string")
    assert (text["minLength"], text["maxLength"]) == (1, 256) and "/" in text["pattern"]
    stamp = schemas["InteractionIn"]["properties"]["timestamp"]["anyOf"]
    assert {s["type"] for s in stamp} >= {"string", "number"}
    path = next(p for p in spec["paths"]["/v1/users/{user_id}"]["get"]["parameters"] if p["name"] == "user_id")
    assert path["schema"]["pattern"] == text["pattern"]
    job = next(p for p in spec["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "job_id")
    assert job["schema"]["maximum"] == 2**63 - 1


def test_unknown_query_parameters_are_a_422_naming_them(client: TestClient) -> None:
    client.post("/v1/interactions", json=events({"user_id": "u", "item_id": "i"}))
    for url in ("/v1/users/u?limit=5", "/v1/users/u/interactions?limt=5", "/v1/jobs?sttus=queued", "/readyz?x=1"):
        r = client.get(url)
        assert r.status_code == 422, (url, r.text)
        assert r.json()["errors"][0]["message"].startswith("unknown query parameter")
    assert client.get("/v1/users/u/interactions?limit=5&cursor=").status_code in (200, 422)  # declared ones pass
    assert client.get("/v1/users/u/interactions?limit=5").status_code == 200


def test_the_serving_routes_refuse_unknown_query_parameters_too(client: TestClient) -> None:
    """A misspelt option would otherwise be ignored silently: each unknown name is an entry of the 422."""
    client.post("/v1/interactions", json=events({"user_id": "u", "item_id": "i"}))
    r = client.get("/v1/users/u/recommendations?n=5&modle=mf&exclude_seen=false&sort=asc")
    assert r.status_code == 422
    body = r.json()
    assert [e["field"] for e in body["errors"]] == ["modle", "sort"]
    assert body["detail"].startswith("modle: unknown query parameter; known: ")
    known = body["errors"][0]["message"].split("known: ")[1].split(", ")
    assert {"n", "model", "exclude_seen"} <= set(known)
    r = client.get("/v1/items/i/similar?n=5&limit=3")
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["limit"]
    for url in ("/v1/users/u/recommendations?n=5&exclude_seen=false", "/v1/items/i/similar?n=5"):
        assert client.get(url).status_code != 422, url  # declared parameters pass the check


def test_trailing_slash_is_not_redirected_to_the_host_header(client: TestClient) -> None:
    r = client.get("/v1/items/", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers


def test_a_405_lists_every_method_of_the_path(client: TestClient) -> None:
    for path, methods in (("/v1/users/u", {"GET", "PUT", "DELETE"}), ("/v1/items/i", {"GET", "PUT"})):
        r = client.options(path)
        assert r.status_code == 405
        assert set(r.headers["allow"].split(", ")) == methods
    assert client.request("PATCH", "/v1/jobs/1").headers["allow"] == "GET"


def test_a_body_that_is_not_json_or_not_an_object_is_a_422(client: TestClient) -> None:
    for body in ("[]", "null", "NaN", '"x"', "{", ""):
        r = client.post("/v1/interactions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.text)
    r = client.post("/v1/interactions", content=json.dumps(events({"user_id": "u", "item_id": "i", "rating": 1e400})))
    assert r.status_code == 422


@pytest.mark.parametrize("bad", ["a\u0000b", "", "   ", "x/y"])
def test_ids_in_predict_and_session_bodies_are_checked_like_stored_ids(client: TestClient, bad: str) -> None:
    """A NUL reached PostgreSQL from these bodies and answered 500; every id they carry is now an id."""
    calls = [
        ("/v1/predict", {"user_id": bad, "item_ids": ["1"]}, "user_id"),
        ("/v1/predict", {"user_id": "u", "item_ids": ["1", bad]}, "item_ids[1]"),
        ("/v1/sessions/next-items", {"item_ids": [bad]}, "item_ids[0]"),
    ]
    for path, body, field in calls:
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert [e["field"] for e in r.json()["errors"]] == [field]


def test_predict_takes_integer_ids_as_digits(client: TestClient) -> None:
    r = client.post("/v1/predict", json={"user_id": 7, "item_ids": [1, "2"]})  # an empty catalogue here
    assert r.status_code == 404, r.text
    assert r.json()["unknown_item_ids"] == ["1", "2"]
