"""Dependencies shared by the routes: settings, a database session, the write-endpoint API key."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from app.api.schemas import Id
from app.config import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything uncommitted is rolled back."""
    with request.app.state.sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
SessionDep = Annotated[Session, Depends(get_session)]

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Required on write endpoints when DEEPREC_API_KEY is set"
)


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """401 unless DEEPREC_API_KEY is unset or the X-API-Key header carries it."""
    if not settings.api_key:
        return
    if key is None or not secrets.compare_digest(key.encode(), settings.api_key.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )


WriteAccess = Depends(require_api_key)
UserIdPath = Annotated[Id, Path(description="External user id")]
ItemIdPath = Annotated[Id, Path(description="External item id")]
