"""Bulk writes tuned per backend: one unnest() INSERT on PostgreSQL, executemany on SQLite.

Both skip rows whose event_id is already stored (ON CONFLICT DO NOTHING) and report how many
rows were really inserted. Columns arrive as numpy arrays, so no Python work is done per row
beyond what the driver needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

LOOKUP_CHUNK = 5_000  # ids per IN (...) query; far below SQLite's 32,766 variables

# One statement for the whole batch; %(name)b sends each column as a binary array (no text quoting).
PG_INSERT = """
    INSERT INTO interaction (user_id, item_id, type, value, occurred_at, event_id)
    SELECT u, i, t, v, TIMESTAMPTZ 'epoch' + us * INTERVAL '1 microsecond', e
    FROM unnest(%(u)b::BIGINT[], %(i)b::BIGINT[], %(t)b::TEXT[], %(v)b::FLOAT8[], %(us)b::BIGINT[], %(e)b::TEXT[])
        AS x(u, i, t, v, us, e)
    ON CONFLICT (event_id) DO NOTHING
"""
SQLITE_INSERT = (
    "INSERT INTO interaction (user_id, item_id, type, value, occurred_at, event_id) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)


def batched(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """INSERT that supports ON CONFLICT on the connection's backend."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def lookup_ids(conn: Connection, table: Table, external_ids: Sequence[str]) -> dict[str, int]:
    """external id -> internal id for the ids that exist.

    Plain SQL on the driver: building the statement through SQLAlchemy cost more than running it,
    for the few ids of a typical API call."""
    found: dict[str, int] = {}
    name = conn.dialect.identifier_preparer.format_table(table)
    for chunk in batched(external_ids, LOOKUP_CHUNK):
        if conn.dialect.name == "postgresql":
            sql = f"SELECT external_id, id FROM {name} WHERE external_id = ANY(%(ids)s)"
            rows = conn.exec_driver_sql(sql, {"ids": list(chunk)})
        else:
            sql = f"SELECT external_id, id FROM {name} WHERE external_id IN ({','.join('?' * len(chunk))})"
            rows = conn.exec_driver_sql(sql, tuple(chunk))
        found.update(rows.all())
    return found


def ensure_ids(conn: Connection, table: Table, external_ids: Sequence[str], **defaults: Any) -> dict[str, int]:
    """external id -> internal id, creating missing rows with the given column defaults."""
    wanted = list(dict.fromkeys(external_ids))
    found = lookup_ids(conn, table, wanted)
    # Sorted, so concurrent transactions take the unique-index locks in one order and cannot deadlock.
    missing = sorted(x for x in wanted if x not in found)
    if missing:
        # DO NOTHING: a concurrent request may create the same id between lookup and insert.
        stmt = dialect_insert(conn, table).on_conflict_do_nothing(index_elements=["external_id"])
        conn.execute(stmt, [{"external_id": x, **defaults} for x in missing])
        found.update(lookup_ids(conn, table, missing))
    return found


def insert_interactions(
    conn: Connection,
    *,
    user_ids: np.ndarray,  # [N] int64 internal ids
    item_ids: np.ndarray,  # [N] int64 internal ids
    types: Sequence[str],  # [N]
    values: np.ndarray,  # [N] float64, NaN where there is no value
    occurred_us: np.ndarray,  # [N] int64 microseconds since the Unix epoch, UTC
    event_ids: Sequence[str | None] | None,  # [N] or None when no row has one
) -> int:
    """Insert the rows; returns how many were new (the rest repeated a stored event_id)."""
    n = len(user_ids)
    if n == 0:
        return 0
    boxed = values.astype(object)
    boxed[np.isnan(values)] = None  # NaN -> NULL
    vals = boxed.tolist()
    evs = list(event_ids) if event_ids is not None else [None] * n
    if conn.dialect.name == "postgresql":
        params = dict(u=user_ids.tolist(), i=item_ids.tolist(), t=list(types), v=vals, us=occurred_us.tolist(), e=evs)
        return conn.exec_driver_sql(PG_INSERT, params).rowcount
    # The text form SQLAlchemy's SQLite DateTime stores, so ORM reads and comparisons agree.
    stamps = np.char.replace(np.datetime_as_string(occurred_us.astype("datetime64[us]"), unit="us"), "T", " ")
    rows = list(zip(user_ids.tolist(), item_ids.tolist(), types, vals, stamps.tolist(), evs, strict=True))
    return conn.exec_driver_sql(SQLITE_INSERT, rows).rowcount
