"""Request and response bodies of the serving endpoints, with the examples shown on /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.fields import JsonId

MAX_N = 1000
MAX_ITEMS = 1000

Strategy = Literal["personalized", "sequential", "content", "popular", "similar"]


class ScoredItemRead(BaseModel):
    item_id: str
    score: float = Field(description="The model's relevance score (higher is better; scale depends on the model)")
    reason: str = Field(description="Why: the seed item it came from, the ensemble member, or 'popular'")
    retrieved_by: str | None = Field(
        default=None,
        description="The retriever that found it: a model's ANN index (its name), 'popular', or 'all' when every "
        "item was ranked (a small catalogue, or exact=true)",
    )


class RecommendationsRead(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "user_id": "u1",
                "model": "hybrid",
                "version": "20250101T120000000000Z-1f2e3d",
                "strategy": "personalized",
                "items": [{"item_id": "i50", "score": 2.31, "reason": "ease", "retrieved_by": "all"}],
                "detail": None,
            }
        },
    )

    user_id: str | None = None
    model: str = Field(description="The model that made the list (after any fallback)")
    version: str | None = Field(description="Its active version; null when computed from the database")
    strategy: Strategy
    items: list[ScoredItemRead]
    detail: str | None = Field(default=None, description="Why a fallback was used, when one was")


class SessionRecommendationsRead(RecommendationsRead):
    unknown_item_ids: list[str] = Field(default_factory=list, description="Session items not in the catalogue")


class SimilarRead(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "item_id": "i50",
                "model": "mf",
                "version": "20250101T120000000000Z-1f2e3d",
                "strategy": "similar",
                "items": [{"item_id": "i181", "score": 0.91, "reason": "similar to i50", "retrieved_by": "all"}],
                "detail": None,
            }
        },
    )

    item_id: str
    model: str
    version: str | None
    strategy: Strategy
    items: list[ScoredItemRead]
    detail: str | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={"example": {"user_id": "u1", "item_ids": ["i242", "i302"], "model": "mf"}},
    )

    user_id: JsonId
    item_ids: list[JsonId] = Field(min_length=1, max_length=MAX_ITEMS)
    model: str | None = None


class PredictionRead(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    item_id: str
    score: float
    rating: float | None = Field(description="Predicted rating on the data set's scale; null without a rating model")
    model: str = Field(description="The model that scored this item (content for items newer than the model)")


class PredictRead(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "example": {
                "model": "mf",
                "version": "20250101T120000000000Z-1f2e3d",
                "strategy": "personalized",
                "predictions": [{"item_id": "i242", "score": 1.7, "rating": None, "model": "mf"}],
                "detail": None,
            }
        },
    )

    model: str
    version: str | None
    strategy: Strategy
    predictions: list[PredictionRead]
    detail: str | None = Field(default=None, description="Why a fallback was used, when one was")


class SessionRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        protected_namespaces=(),
        json_schema_extra={"example": {"item_ids": ["i50", "i172", "i181"], "n": 10, "model": "gru4rec"}},
    )

    item_ids: list[JsonId] = Field(min_length=1, max_length=MAX_ITEMS, description="The session's items, oldest first")
    n: int = Field(default=10, gt=0, le=MAX_N)
    model: str | None = None
    exclude_seen: bool = Field(default=True, description="Leave out the session's own items")
    exact: bool = Field(default=False, description="Rank every item instead of the retrieved candidates")


class ModelRead(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    active_version: str | None
    metrics: dict[str, Any]
    device: str | None
    trained_at: datetime | None
    loaded: bool = Field(description="Serving now (false: not trained yet, or its version was refused)")
    error: str | None = None
    weights: dict[str, float] | None = Field(
        default=None,
        description="An ensemble's learned member weights: the hybrid's (weights= on recommendations overrides "
        "them per request) or the rating stack's, for a user and item of typical training counts",
    )
    indexes: list[str] = Field(default_factory=list, description="ANN index files loaded with the version")
    training_job: int | None = Field(
        default=None,
        description="A queued or running training job will publish a version of this model (the first start "
        "trains the slower models in the background): its id; null when none",
    )


class ModelsRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "models": [
                    {
                        "name": "mf",
                        "active_version": "20250101T120000000000Z-1f2e3d",
                        "metrics": {"valid_ndcg@10": 0.071, "test_ndcg@10": 0.068},
                        "device": "cpu",
                        "trained_at": "2025-01-01T12:00:00Z",
                        "loaded": True,
                        "error": None,
                        "training_job": None,
                    }
                ]
            }
        }
    )

    models: list[ModelRead]


class VersionRead(BaseModel):
    version: str
    trained_at: datetime
    metrics: dict[str, Any]
    size_bytes: int
    active: bool
    status: str | None = Field(default=None, description="candidate | active | retired (the model_version table)")
    note: str | None = Field(default=None, description="Why it was or was not promoted")
    job_id: int | None = Field(default=None, description="The training job that made it")


class VersionsRead(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "mf",
                "active_version": "20250101T120000000000Z-1f2e3d",
                "versions": [
                    {
                        "version": "20250101T120000000000Z-1f2e3d",
                        "trained_at": "2025-01-01T12:00:00Z",
                        "metrics": {"valid_ndcg@10": 0.071},
                        "size_bytes": 1234567,
                        "active": True,
                    }
                ],
            }
        }
    )

    name: str
    active_version: str | None
    versions: list[VersionRead]
