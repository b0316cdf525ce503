"""Request and response bodies of the ingestion API (pydantic v2), with examples for /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.api.fields import (
    Attributes,
    Category,
    EventId,
    EventType,
    JsonId,
    Rating,
    Timestamp,
    Title,
)
from app.db.repository import EVENT_TYPES

IN = ConfigDict(extra="forbid")


class InteractionIn(BaseModel):
    model_config = ConfigDict(
        **IN,
        json_schema_extra={
            "examples": [
                {"user_id": "u42", "item_id": "i7", "rating": 4.5, "timestamp": "2024-05-01T12:00:00Z"},
                {"user_id": "u42", "item_id": "i9", "type": "click", "timestamp": 1714564800, "event_id": "ev-1"},
            ]
        },
    )

    user_id: JsonId
    item_id: JsonId
    rating: Rating | None = Field(default=None, description="Explicit rating on the configured scale")
    type: EventType | None = Field(
        default=None, description=f"One of {', '.join(EVENT_TYPES)}; default rating if a rating is given, else view"
    )
    timestamp: Timestamp | None = Field(default=None, description="ISO-8601 or Unix seconds; default now")
    event_id: EventId | None = Field(default=None, description="Client id of the event; re-sent ids are stored once")

    @property
    def event_type(self) -> str:
        return self.type or ("rating" if self.rating is not None else "view")


class InteractionsCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "interactions": [
                        {"user_id": "u42", "item_id": "i7", "rating": 4.5, "event_id": "ev-1"},
                        {"user_id": "u42", "item_id": "i9", "type": "view", "timestamp": "2024-05-01T12:00:00Z"},
                        {"user_id": "u7", "item_id": "i7", "type": "purchase", "timestamp": 1714564800},
                    ]
                }
            ]
        },
    )

    interactions: list[InteractionIn]


class InteractionsResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inserted": 3, "duplicates": 0}]})

    inserted: int = Field(description="Events stored by this call")
    duplicates: int = Field(description="Events skipped because their event_id was already stored")


class InteractionRead(BaseModel):
    item_id: str
    type: str
    rating: float | None
    timestamp: datetime
    event_id: str | None


class InteractionPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "interactions": [
                        {
                            "item_id": "i7",
                            "type": "rating",
                            "rating": 4.5,
                            "timestamp": "2024-05-01T12:00:00Z",
                            "event_id": "ev-1",
                        }
                    ],
                    "next_cursor": "MTcxNDU2NDgwMDAwMDAwMC4xMg",
                }
            ]
        }
    )

    interactions: list[InteractionRead]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class ItemUpdate(BaseModel):
    """Fields of an item; a field left out keeps its stored value."""

    model_config = ConfigDict(
        **IN,
        json_schema_extra={
            "examples": [{"title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"], "attributes": {"year": 1979}}]
        },
    )

    title: Title | None = None
    categories: list[Category] | None = Field(default=None, max_length=100)
    attributes: Attributes | None = Field(default=None, description="Free JSON: year, price, text, ...")
    active: StrictBool | None = Field(default=None, description="Inactive items are kept but not recommended")


class ItemIn(ItemUpdate):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"item_id": "i7", "title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"]}]}
    )

    item_id: JsonId


class ItemsUpsert(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"item_id": "i7", "title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"]},
                        {"item_id": "i9", "title": "Heat (1995)", "attributes": {"year": 1995, "price": 3.99}},
                    ]
                }
            ]
        },
    )

    items: list[ItemIn]


class ItemsResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"created": 1, "updated": 1}]})

    created: int
    updated: int


class ItemRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "i7",
                    "title": "Alien (1979)",
                    "categories": ["Horror", "Sci-Fi"],
                    "attributes": {"year": 1979},
                    "active": True,
                    "created_at": "2024-05-01T12:00:00Z",
                    "interactions": 583,
                }
            ]
        }
    )

    item_id: str
    title: str | None
    categories: list[str]
    attributes: dict[str, Any]
    active: bool
    created_at: datetime
    interactions: int = Field(description="Events stored for this item")


class UserIn(BaseModel):
    model_config = ConfigDict(**IN, json_schema_extra={"examples": [{"attributes": {"age": 31, "country": "NZ"}}]})

    attributes: Attributes | None = Field(default=None, description="Replaces the stored attributes; omit to keep")


class UserRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u42",
                    "attributes": {"age": 31},
                    "created_at": "2024-05-01T12:00:00Z",
                    "interactions": 12,
                }
            ]
        }
    )

    user_id: str
    attributes: dict[str, Any]
    created_at: datetime
    interactions: int = Field(description="Events stored for this user")


class UserDeleted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"user_id": "u42", "deleted_interactions": 12}]})

    user_id: str
    deleted_interactions: int


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "checks": {
                        "database": {"ok": True, "detail": "sqlite reachable"},
                        "migrations": {"ok": True, "detail": "at head 0001"},
                    },
                }
            ]
        }
    )

    status: str = Field(description="ready or not ready")
    checks: dict[str, dict[str, Any]]
