"""Helpers for comparing two loads into one database: dump every row, empty the tables again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, text

from app.db.session import make_sessionmaker
from app.db.tables import CatalogueRewrite, HistoryRewrite, Interaction, Item, User

TABLES = (User, Item, Interaction)


def dump(engine: Engine) -> dict[str, Any]:
    """Every row of user, item and interaction (ids included, created_at left out) and the change counts."""
    out: dict[str, Any] = {}
    with make_sessionmaker(engine)() as session:
        for table in TABLES:
            cols = [c for c in table.__table__.columns if c.name != "created_at"]
            out[table.__tablename__] = [tuple(r) for r in session.execute(select(*cols).order_by(cols[0])).all()]
        for counter in (CatalogueRewrite, HistoryRewrite):
            out[counter.__tablename__] = session.scalar(select(counter.count))
    return out


def reset(engine: Engine) -> None:
    """Empty the tables with ids starting at 1 again, and the counters at 0."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text('TRUNCATE interaction, "user", item RESTART IDENTITY CASCADE'))
        else:
            for name in ("interaction", '"user"', "item"):
                conn.execute(text(f"DELETE FROM {name}"))
        conn.execute(text("UPDATE catalogue_rewrite SET count = 0"))
        conn.execute(text("UPDATE history_rewrite SET count = 0"))
