"""The OpenAPI document with what every route can answer besides its own (401, 403, 413, 422, 503: what
``app.api.guard`` and ``app.api.errors`` do, added once for all routes) and the rules the settings set."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.errors import RETRY_AFTER_S, ErrorBody
from app.config import Settings

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
RETRY_AFTER = {
    "Retry-After": {"description": f"Seconds to wait before retrying ({RETRY_AFTER_S} for the database)",
                    "schema": {"type": "integer"}}
}  # fmt: skip
COMMON: dict[str, dict[str, Any]] = {
    "401": {"description": "Missing or unknown X-API-Key (when keys are configured)", "content": ERROR},
    "403": {"description": "The key's scope does not cover this route", "content": ERROR},
    "413": {"description": "Body over DEEPREC_MAX_BODY_BYTES; nothing was read or stored", "content": ERROR},
    "422": {"description": "Invalid input (an unknown query parameter included); nothing was stored",
            "content": ERROR},
    "503": {"description": "The database is unavailable (or the models are loading): retry after Retry-After",
            "content": ERROR, "headers": RETRY_AFTER},
}  # fmt: skip


def _add_common(operation: dict[str, Any], path: str) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    wanted = ["422"]
    if operation.get("security"):
        wanted += ["401", "403"]
    if "requestBody" in operation:
        wanted.append("413")
    if path.startswith("/v1/"):
        wanted.append("503")
    for code in wanted:
        if code not in responses:
            responses[code] = COMMON[code]
        elif code == "503":
            responses[code].setdefault("headers", RETRY_AFTER)
        responses[code].setdefault("content", ERROR)


def _settings_rules(schema: dict[str, Any], settings: Settings) -> None:
    """Rules that come from the settings rather than the models: the rating scale."""
    rating = schema["components"]["schemas"].get("InteractionIn", {}).get("properties", {}).get("rating", {})
    for option in rating.get("anyOf", [rating]):
        if option.get("type") == "number":
            option.update(minimum=settings.rating_min, maximum=settings.rating_max)


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds COMMON to each operation (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, description=app.description,
                routes=app.routes, tags=app.openapi_tags, servers=app.servers,
            )  # fmt: skip
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components.setdefault("ErrorBody", body)
            for path, item in schema.get("paths", {}).items():
                for operation in item.values():
                    _add_common(operation, path)
            _settings_rules(schema, app.state.settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
