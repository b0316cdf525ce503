"""Dependencies shared by the routes: settings, a database session, the access rules (``app.api.access``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.orm import Session

from app.api.access import AdminAccess, ReadAccess, WriteAccess
from app.api.fields import Id
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

__all__ = ["AdminAccess", "ReadAccess", "WriteAccess", "SessionDep", "SettingsDep"]
UserIdPath = Annotated[Id, Path(description="External user id")]
ItemIdPath = Annotated[Id, Path(description="External item id")]
