"""POST /v1/train checks the type and range of every training parameter with a 422 naming the field,
and queues nothing (issue 16 item 10)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.train_params import CHOICES, MODEL_LISTS, NUMBERS
from app.recsys.models import get_model_class, model_names
from app.recsys.training import TrainConfig


def train(client: TestClient, params: dict[str, Any], models: list[str] | None = None) -> Any:
    return client.post("/v1/train", json={"models": models or ["mf"], "params": params})


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"epochs": -5}, "params.epochs", "outside 1..100000"),
        ({"epochs": 0}, "params.epochs", "outside"),
        ({"dim": 1_000_000_000}, "params.dim", "outside 1..1024"),
        ({"dim": 1e9}, "params.dim", "expected int"),
        ({"mf": {"dim": 0}}, "params.mf.dim", "outside"),
        ({"lr": 0}, "params.lr", "outside"),
        ({"lr": "fast"}, "params.lr", "expected float"),
        ({"batch_size": True}, "params.batch_size", "expected int"),
        ({"mlp": {"dropout": 1.5}}, "params.mlp.dropout", "outside"),
        ({"mf": {"epochs": {"a": 1}}}, "params.mf.epochs", "expected int, got an object"),
        ({"optimizer": "adagrad"}, "params.optimizer", "not one of adam, adamw, sgd"),
        ({"objective": "clicks"}, "params.objective", "not one of"),
        ({"loss": "hinge"}, "params.loss", "not one of"),
    ],
)
def test_bad_values_are_a_422_naming_the_field(client: TestClient, params: dict, field: str, says: str) -> None:
    r = train(client, params, ["mf", "mlp"])
    assert r.status_code == 422, r.text
    errors = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert field in errors and says in errors[field], errors
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing queued


def test_non_finite_numbers_are_refused(client: TestClient) -> None:
    for text in ("NaN", "Infinity", "-Infinity"):
        body = '{"models": ["mf"], "params": {"lr": ' + text + "}}"
        r = client.post("/v1/train", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "params.lr", r.text


def test_list_parameters_are_checked_entry_by_entry(client: TestClient) -> None:
    assert train(client, {"layers": [64, 0]}, ["mlp"]).json()["errors"][0]["field"] == "params.layers"
    assert train(client, {"layers": 3}, ["gru4rec"]).status_code == 202
    bad = train(client, {"hybrid": {"members": ["mf", "nope"]}}, ["hybrid"])
    assert bad.status_code == 422 and "unknown model(s) ['nope']" in bad.json()["detail"]


def test_values_in_range_are_queued_as_given(client: TestClient) -> None:
    params = {"epochs": 3, "lr": 0.01, "mf": {"dim": 32, "reg": 0.0}, "optimizer": "adamw", "seed": 7}
    r = train(client, params)
    assert r.status_code == 202, r.text
    assert client.get(f"/v1/jobs/{r.json()['job_id']}").json()["params"] == params


def test_every_config_field_has_a_rule() -> None:
    """A field added to TrainConfig or a model config without a range or choice here fails this test (it
    would still get the generic FALLBACK bound)."""
    fields = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name in model_names():
        fields |= {f.name: f.type for f in dataclasses.fields(get_model_class(name).config_cls)}
    typed_only = {n for n, t in fields.items() if str(t) in ("bool", "<class 'bool'>")}
    missing = set(fields) - set(NUMBERS) - set(CHOICES) - set(MODEL_LISTS) - typed_only
    assert not missing, f"no range or choices for {sorted(missing)} in app/api/train_params.py"
