from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db.session import make_engine


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()
