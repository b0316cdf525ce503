"""The field types of the ingestion API's bodies and paths: ids, ratings, timestamps, attributes, text, each
with the rules it enforces stated in the OpenAPI document too."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from app.db.repository import EVENT_TYPES
from app.db.tables import ID_LENGTH

ID_MAX = ID_LENGTH
ATTRIBUTES_MAX_BYTES = 65_536
ATTRIBUTES_MAX_DEPTH = 8  # {"a": 1} is depth 1, {"a": [1]} depth 2: deeper JSON is refused before it is stored
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # events before the Unix epoch are refused as mistakes
INT64 = 2**63
# The rules an id follows, in the OpenAPI document too: not blank, no NUL, and addressable as one path
# segment (no "/", not "." or "..", which clients normalise away).
ID_PATTERN = r"^(?!\.{1,2}$)[^/\x00]*[^\s/\x00][^/\x00]*$"
ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": ID_PATTERN}


def _check_text(value: str, what: str, max_len: int) -> str:
    if not value.strip():
        raise ValueError(f"empty {what}")
    if len(value) > max_len:
        raise ValueError(f"{what} longer than {max_len} characters ({len(value)})")
    _check_chars(value, what)
    return value


def _check_chars(value: str, what: str) -> None:
    """Text every backend stores: no NUL (PostgreSQL rejects it) and no lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode (a lone surrogate)") from None


def _check_id(value: str) -> str:
    return _check_text(value, "id", ID_MAX)


def _check_path_id(value: str) -> str:
    _check_text(value, "id", ID_MAX)
    if "/" in value:
        raise ValueError("id contains '/', which no URL path segment can carry")
    if value in (".", ".."):
        raise ValueError(f"id {value!r} is a relative path segment, which clients drop from URLs")
    return value


def _id_from_json(value: Any) -> Any:
    """Ids are strings; an integer is taken as its decimal digits (a float is refused: 50.0 is not "50")."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"an id is a string or an integer, got {json.dumps(value)}")
    if isinstance(value, int):
        if not -INT64 <= value < INT64:
            raise ValueError("an integer id must fit in 64 bits; send larger ones as strings")
        return str(value)
    return value


def _check_finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    return value


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1.0
        raise ValueError(f"must be a number, got {str(value).lower()}")
    return value


def _check_type(value: str) -> str:
    if value not in EVENT_TYPES:
        raise ValueError(f"unknown event type {value!r}; expected one of {', '.join(EVENT_TYPES)}")
    return value


def _unix(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be finite, got {seconds}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        hint = "; it looks like milliseconds, send Unix seconds" if abs(seconds) > 1e11 else ""
        raise ValueError(f"timestamp {seconds:g} out of range{hint}") from exc


def _parse_timestamp(value: Any) -> Any:
    """ISO-8601 (naive means UTC) or Unix seconds, as a number or a numeric string."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, bool):
        raise ValueError("timestamp must be ISO-8601 or Unix seconds")
    if isinstance(value, int | float):
        return _unix(float(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            return _unix(float(text))
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"timestamp {value!r} is neither ISO-8601 nor Unix seconds") from None
        try:  # a zone can push a date at either end of the calendar out of it
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"timestamp {value!r} is out of range in UTC") from None
    raise ValueError("timestamp must be ISO-8601 or Unix seconds")


def _not_before_epoch(value: datetime | None) -> datetime | None:
    if value is not None and value < EARLIEST:
        raise ValueError(f"timestamp {value.isoformat()} is before {EARLIEST.isoformat()}, the earliest accepted")
    return value


def _check_json(value: Any, path: str = "", depth: int = 0) -> Any:
    """Values that every backend can store and serve as JSON: finite numbers, no NUL characters, and
    at most ATTRIBUTES_MAX_DEPTH levels of objects and arrays (checked before going deeper)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'} is {value}; JSON numbers must be finite")
    if isinstance(value, str):
        _check_chars(value, path or "value")
    if isinstance(value, dict | list) and depth >= ATTRIBUTES_MAX_DEPTH:
        raise ValueError(f"{path} nests objects and arrays more than {ATTRIBUTES_MAX_DEPTH} deep")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, f"{path}.{key}" if path else str(key), depth + 1)
            _check_json(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
    return value


def _check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    size = len(json.dumps(value))
    if size > ATTRIBUTES_MAX_BYTES:
        raise ValueError(f"attributes take {size} bytes as JSON; at most {ATTRIBUTES_MAX_BYTES}")
    return value


INT_ID = {"type": "integer", "minimum": -INT64, "maximum": INT64 - 1}
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"  # not blank, no NUL
EVENT_ID = {"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": TEXT_PATTERN}
Id = Annotated[str, AfterValidator(_check_path_id), WithJsonSchema(ID_SCHEMA)]  # a user or an item
JsonId = Annotated[
    str, BeforeValidator(_id_from_json), AfterValidator(_check_path_id), WithJsonSchema({"anyOf": [ID_SCHEMA, INT_ID]})
]
EventId = Annotated[
    str, BeforeValidator(_id_from_json), AfterValidator(_check_id), WithJsonSchema({"anyOf": [EVENT_ID, INT_ID]})
]
Rating = Annotated[float, BeforeValidator(_not_bool), AfterValidator(_check_finite)]
EventType = Annotated[str, AfterValidator(_check_type)]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    AfterValidator(_not_before_epoch),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0}]}),
]
Attributes = Annotated[dict[str, Any], AfterValidator(_check_attributes)]
Title = Annotated[
    str,
    AfterValidator(lambda v: _check_text(v, "title", 1024)),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1024, "pattern": TEXT_PATTERN}),
]
Category = Annotated[
    str,
    AfterValidator(lambda v: _check_text(v, "category", ID_MAX)),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": ID_MAX, "pattern": TEXT_PATTERN}),
]
