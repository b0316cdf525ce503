"""The ids and model names in the OpenAPI document's examples exist after `make run`: users and items that
`deeprec demo-data` writes with its defaults, and models that `deeprec train --model default` trains."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.ingest.demo import GENRES, DemoConfig, generate
from app.main import create_app
from app.recsys.pipeline import DEFAULT_MODELS

ITEMS, USERS, _ = generate(DemoConfig())
KNOWN = {"user_id": set(USERS["user_id"]), "item_id": set(ITEMS["item_id"]), "model": set(DEFAULT_MODELS)}


def document() -> dict[str, Any]:
    return create_app(Settings(_env_file=None, database_url="sqlite://")).openapi()  # type: ignore[call-arg]


def kind(key: str) -> str | None:
    """Which set a field's values must be in: ids, item ids, or model names."""
    if key in ("user_id", "item_id", "model"):
        return key
    if key in ("item_ids", "exclude"):
        return "item_id"
    if key in ("models", "name"):
        return "model"
    return None


def values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v for v in str(value).split(",") if v] if value is not None else []


def walk(example: Any) -> Iterator[tuple[str, str]]:
    """(kind, value) of every id and model name in an example body."""
    if isinstance(example, dict):
        for key, value in example.items():
            what = kind(key)
            nested = isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))
            if what and not nested:
                yield from ((what, v) for v in values(value))
            else:
                yield from walk(value)
    elif isinstance(example, list):
        for value in example:
            yield from walk(value)


def cases() -> Iterator[Any]:
    doc = document()
    for name, schema in doc["components"]["schemas"].items():
        examples = [*schema.get("examples", []), *([schema["example"]] if "example" in schema else [])]
        if examples:
            yield pytest.param(examples, id=f"schema {name}")
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for p in op.get("parameters", []):
                examples = p["schema"].get("examples", [])
                if examples and kind(p["name"]):
                    yield pytest.param([{p["name"]: e} for e in examples], id=f"{method} {path} {p['name']}")


@pytest.mark.parametrize("examples", list(cases()))
def test_examples_use_the_demo_data_and_the_default_models(examples: list[Any]) -> None:
    for what, value in walk(examples):
        assert value in KNOWN[what], f"{what} {value!r} is not in what `make run` creates"


def test_every_example_is_checked() -> None:
    checked = {p.id for p in cases()}
    assert {"schema PredictRequest", "schema SessionRequest", "schema RecommendationsRead"} <= checked
    assert "get /v1/models/{name}/versions name" in checked
    sample = [("user_id", "u1"), ("item_id", "i242"), ("item_id", "i302"), ("model", "mf")]
    assert list(walk({"user_id": "u1", "item_ids": ["i242", "i302"], "model": "mf"})) == sample
    assert set(GENRES) >= {"Comedy", "Drama"}  # the categories the README's examples filter on
