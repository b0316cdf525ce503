"""pandas snapshots of the database, the input the recommender core builds its data set from.

Interaction frames: user_id (str, external), item_id (str, external), type (str),
value (float64, NaN when none), ts (int64 Unix seconds). Item frames: item_id, title,
categories (list[str]), attributes (dict), active (bool), created_at_ts (int64).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import BigInteger, Row, Text, cast, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.db.bulk import driver
from app.db.tables import Interaction, Item, User

INTERACTION_COLUMNS = ("user_id", "item_id", "type", "value", "ts")
ITEM_COLUMNS = ("item_id", "title", "categories", "attributes", "active", "created_at_ts")
USER_COLUMNS = ("user_id", "attributes", "created_at_ts")


class epoch_seconds(FunctionElement[int]):
    """Whole Unix seconds of a timestamp column, computed by the database."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_pg(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


def _interaction_frame(rows: Sequence[Row[Any]] | Sequence[Any]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=["id", *INTERACTION_COLUMNS])
    return frame.drop(columns="id").astype(
        {"user_id": str, "item_id": str, "type": str, "value": "float64", "ts": "int64"}
    )


def stream_interactions(*, session: Session, chunk_size: int = 100_000) -> Iterator[pd.DataFrame]:
    """Every interaction stored when the call starts, in insertion order, chunk_size rows at a time."""
    ev = Interaction
    last_id, max_id = 0, session.scalar(select(func.max(ev.id)))
    if max_id is None:
        return
    stmt = (
        select(ev.id, User.external_id, Item.external_id, ev.type, ev.value, epoch_seconds(ev.occurred_at))
        .join(User, User.id == ev.user_id)
        .join(Item, Item.id == ev.item_id)
        .order_by(ev.id)
        .limit(chunk_size)
    )
    while last_id < max_id:
        # Keyset pagination on the primary key: bounded memory, no OFFSET scans.
        rows = session.execute(stmt.where(ev.id > last_id, ev.id <= max_id)).all()
        if not rows:
            return
        last_id = rows[-1][0]
        yield _interaction_frame(rows)


def interactions_frame(*, session: Session) -> pd.DataFrame:
    """All interactions ordered by time (ties in insertion order)."""
    chunks = list(stream_interactions(session=session))
    frame = pd.concat(chunks, ignore_index=True) if chunks else _interaction_frame([])
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _table_frame(session: Session, columns: Sequence[str], *selected: Any, json: Sequence[str] = ()) -> pd.DataFrame:
    """The selected columns of a whole table, read on the driver's cursor.

    A table of 1M items read through ORM rows spent most of its time per row in SQLAlchemy and in one
    json.loads per JSON value; here the driver's tuples become columns directly, and each JSON column
    arrives as text (JSONB cast on PostgreSQL) and is parsed in a single json.loads call.
    """
    conn = session.connection()
    chosen = [cast(col, Text) if name in json else col for name, col in zip(columns, selected, strict=True)]
    sql = str(select(*chosen).compile(dialect=conn.dialect))  # no bound parameters
    cur = driver(conn).cursor()
    try:
        rows = cur.execute(sql).fetchall()
    finally:
        cur.close()
    values = dict(zip(columns, map(list, zip(*rows, strict=True)), strict=True)) if rows else {c: [] for c in columns}
    del rows
    for name in json:
        if values[name]:
            values[name] = jsonlib.loads("[" + ",".join("null" if v is None else v for v in values[name]) + "]")
    frame = pd.DataFrame(values, columns=list(columns))
    return frame.astype({columns[0]: str, "created_at_ts": "int64"})


def items_frame(*, session: Session) -> pd.DataFrame:
    """Every item in creation order; categories are lists of str, attributes dicts."""
    frame = _table_frame(
        session,
        ITEM_COLUMNS,
        Item.external_id,
        Item.title,
        Item.categories,
        Item.attributes,
        Item.active,
        epoch_seconds(Item.created_at),
        json=("categories", "attributes"),
    )
    return frame.astype({"active": bool})


def users_frame(*, session: Session) -> pd.DataFrame:
    """Every user in creation order: user_id, attributes (dict), created_at_ts."""
    selected = (User.external_id, User.attributes, epoch_seconds(User.created_at))
    return _table_frame(session, USER_COLUMNS, *selected, json=("attributes",))


def database_frames(settings: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) of the configured database, read on a short-lived engine."""
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine)() as session:
            return interactions_frame(session=session), items_frame(session=session)
    finally:
        engine.dispose()
