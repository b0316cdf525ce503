"""Response bodies of catalogue browsing (GET /v1/items, GET /v1/users), with the examples shown on /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NEXT_CURSOR = "Pass as ?cursor= for the next page (same other parameters); null on the last page"


class ItemSummary(BaseModel):
    item_id: str
    title: str | None
    categories: list[str]
    attributes: dict[str, Any]
    active: bool
    created_at: datetime


class ItemPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "item_id": "i12",
                            "title": "Golden Harbor (2019)",
                            "categories": ["Comedy", "Romance"],
                            "attributes": {"year": 2019},
                            "active": True,
                            "created_at": "2025-01-01T12:00:00Z",
                        }
                    ],
                    "next_cursor": "aWQ6MTI",
                }
            ]
        }
    )

    items: list[ItemSummary]
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class UserSummary(BaseModel):
    user_id: str
    attributes: dict[str, Any]
    created_at: datetime


class UserPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "users": [
                        {
                            "user_id": "u1",
                            "attributes": {"age": 31, "country": "NZ"},
                            "created_at": "2025-01-01T12:00:00Z",
                        }
                    ],
                    "next_cursor": None,
                }
            ]
        }
    )

    users: list[UserSummary]
    next_cursor: str | None = Field(description=NEXT_CURSOR)
