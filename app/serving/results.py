"""Plain results and errors of the serving layer; the API turns them into JSON and status codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRATEGIES = ("personalized", "sequential", "content", "popular", "similar")


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str
    retrieved_by: str | None = None  # the retriever that found it ("all": every item was ranked)


@dataclass
class RecList:
    """A ranked list and how it was made; ``version`` is the active version of ``model`` (None: from the DB)."""

    model: str
    version: str | None
    strategy: str
    items: list[ScoredItem]
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    item_id: str
    score: float
    rating: float | None
    model: str


class ServingError(Exception):
    """An error the client caused or must wait out: carries an HTTP status and a JSON-able detail."""

    status = 400

    def __init__(self, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class UnknownModel(ServingError):
    status = 422

    def __init__(self, name: str, valid: list[str], why: str = "unknown model") -> None:
        super().__init__({"message": f"{why}: {name!r}", "valid_models": valid})


class NotFound(ServingError):
    status = 404


class NotReady(ServingError):
    status = 503

    def __init__(self, retry_after_s: int = 2) -> None:
        super().__init__("models are loading; retry shortly", {"Retry-After": str(retry_after_s)})


class BadRequest(ServingError):
    status = 422

    def __init__(self, message: str) -> None:
        super().__init__({"message": message})


class ModelUnavailable(ServingError):
    """A model asked for by name whose active version could not be loaded: never silently replaced."""

    status = 503

    def __init__(self, name: str, why: str, retry_after_s: int = 30) -> None:
        super().__init__({"message": f"model {name!r} is unavailable: {why}"}, {"Retry-After": str(retry_after_s)})
