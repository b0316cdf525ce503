"""Bulk writes tuned per backend: COPY (or one unnest() INSERT for small batches) on PostgreSQL,
executemany on SQLite.

Both skip rows whose event_id is already stored (ON CONFLICT DO NOTHING) and report how many
rows were really inserted. Columns arrive as numpy arrays, so no Python work is done per row
beyond what the driver needs: COPY's binary rows are laid out by numpy, not by the driver.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

LOOKUP_CHUNK = 5_000  # ids per IN (...) query; far below SQLite's 32,766 variables
# From this many rows a batch goes through COPY on PostgreSQL: below it, the one-statement unnest()
# INSERT is cheaper than COPY's extra round trips (API calls of a few events stay on it).
COPY_MIN_ROWS = 5_000
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, where binary timestamptz counts from
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
COPY_TRAILER = b"\xff\xff"
# Rows wait here with their order; the INSERT from it skips stored event_ids as the unnest() one does.
PG_STAGE = """
    CREATE TEMP TABLE IF NOT EXISTS interaction_stage (
        ord BIGINT, user_id BIGINT, item_id BIGINT, type TEXT, value FLOAT8, occurred_at TIMESTAMPTZ, event_id TEXT
    ) ON COMMIT DELETE ROWS
"""
PG_FROM_STAGE = """
    INSERT INTO interaction (user_id, item_id, type, value, occurred_at, event_id)
    SELECT user_id, item_id, type, value, occurred_at, event_id FROM interaction_stage ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
"""

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
    if conn.dialect.name == "postgresql" and n >= COPY_MIN_ROWS:
        return _copy_interactions(conn, user_ids, item_ids, types, values, occurred_us, event_ids)
    if conn.dialect.name == "postgresql":
        params = dict(u=user_ids.tolist(), i=item_ids.tolist(), t=list(types), v=vals, us=occurred_us.tolist(), e=evs)
        return conn.exec_driver_sql(PG_INSERT, params).rowcount
    # The text form SQLAlchemy's SQLite DateTime stores, so ORM reads and comparisons agree.
    stamps = np.char.replace(np.datetime_as_string(occurred_us.astype("datetime64[us]"), unit="us"), "T", " ")
    rows = list(zip(user_ids.tolist(), item_ids.tolist(), types, vals, stamps.tolist(), evs, strict=True))
    return conn.exec_driver_sql(SQLITE_INSERT, rows).rowcount


def text_bytes(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """[N] UTF-8 bytes ('S' dtype) of str values; None becomes b"" (pass it as NULL separately)."""
    arr = np.asarray(values, dtype=object)
    arr = np.where(pd.isna(arr), "", arr).astype(str)
    return np.char.encode(arr, "utf-8")


def copy_binary(fields: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """A whole COPY ... (FORMAT BINARY) stream of N rows: header, rows, trailer.

    Each field is (data, null): data [N] of a big-endian fixed-width dtype ('>i8', '>f8') or bytes
    ('S'); null [N] bool or None. Every row is placed by offsets computed with numpy, so the cost
    is a few array passes per field whatever N is.
    """
    n = len(fields[0][0])
    parts = []
    for data, null in fields:
        width = data.dtype.itemsize
        raw = data.view(np.uint8).reshape(n, width)  # [N, W]
        length = np.char.str_len(data).astype(np.int64) if data.dtype.kind == "S" else np.full(n, width)  # [N]
        if null is not None:
            length = np.where(null, -1, length)
        parts.append((raw, length))
    row_len = 2 + sum(4 + np.maximum(length, 0) for _, length in parts)  # [N]
    start = len(COPY_HEADER) + np.cumsum(row_len) - row_len  # [N] offset of each row
    buf = np.zeros(len(COPY_HEADER) + int(row_len.sum()) + len(COPY_TRAILER), dtype=np.uint8)
    buf[: len(COPY_HEADER)] = np.frombuffer(COPY_HEADER, dtype=np.uint8)
    buf[-len(COPY_TRAILER) :] = 0xFF
    count = np.frombuffer(np.array(len(fields), dtype=">i2").tobytes(), dtype=np.uint8)
    buf[start[:, None] + np.arange(2)] = count
    pos = start + 2  # [N] where the next field of each row goes
    for raw, length in parts:
        buf[pos[:, None] + np.arange(4)] = length.astype(">i4").view(np.uint8).reshape(n, 4)
        present = np.arange(raw.shape[1])[None, :] < length[:, None]  # [N, W]
        buf[((pos + 4)[:, None] + np.arange(raw.shape[1]))[present]] = raw[present]
        pos = pos + 4 + np.maximum(length, 0)
    return buf.tobytes()


def driver(conn: Connection) -> Any:
    """The driver's own connection (psycopg or sqlite3) under a SQLAlchemy connection, same transaction."""
    raw = conn.connection.driver_connection
    assert raw is not None, "the connection is closed"
    return raw


def copy_into(conn: Connection, sql: str, payload: bytes) -> None:
    """Run ``COPY ... FROM STDIN (FORMAT BINARY)`` with the payload, in the connection's transaction."""
    with driver(conn).cursor() as cur, cur.copy(sql) as copy:
        copy.write(payload)


def _copy_interactions(
    conn: Connection,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    types: Sequence[str],
    values: np.ndarray,
    occurred_us: np.ndarray,
    event_ids: Sequence[str | None] | None,
) -> int:
    """COPY the rows: straight into interaction when none has an event_id (nothing can conflict),
    else into a temporary stage and from there with ON CONFLICT DO NOTHING, in the given order."""
    n = len(user_ids)
    nan = np.isnan(values)
    fields = [
        (user_ids.astype(">i8"), None),
        (item_ids.astype(">i8"), None),
        (text_bytes(types), None),
        (np.where(nan, 0.0, values).astype(">f8"), nan),
        ((occurred_us - PG_EPOCH_US).astype(">i8"), None),
    ]
    columns = "user_id, item_id, type, value, occurred_at"
    if event_ids is None:
        copy_into(conn, f"COPY interaction ({columns}) FROM STDIN (FORMAT BINARY)", copy_binary(fields))
        return n
    events = np.asarray(event_ids, dtype=object)
    fields = [(np.arange(n, dtype=">i8"), None), *fields, (text_bytes(events), pd.isna(events))]
    conn.exec_driver_sql(PG_STAGE)
    sql = f"COPY interaction_stage (ord, {columns}, event_id) FROM STDIN (FORMAT BINARY)"
    copy_into(conn, sql, copy_binary(fields))
    inserted = conn.exec_driver_sql(PG_FROM_STAGE).rowcount
    conn.exec_driver_sql("TRUNCATE interaction_stage")
    return inserted


def upsert_columns(conn: Connection, table: Table, columns: dict[str, np.ndarray], *, json: Sequence[str] = ()) -> None:
    """INSERT ... ON CONFLICT (external_id) DO UPDATE of every given column, for N rows at once.

    columns: external_id and the columns to set, each [N] of str (None for NULL); the ``json`` ones
    hold JSON text, so no value is serialised per row here. The same statement as
    ``repository.upsert_items`` / ``upsert_users`` with every field given, hence the same rows and the
    same trigger counts; PostgreSQL stages the rows with COPY first, in their order.
    """
    names = list(columns)
    name = conn.dialect.identifier_preparer.format_table(table)
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c != "external_id")
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(names))
        sql = f"INSERT INTO {name} ({', '.join(names)}) VALUES ({marks}) ON CONFLICT (external_id) DO UPDATE SET "
        sql += updates
        rows = list(zip(*(np.asarray(columns[c], dtype=object).tolist() for c in names), strict=True))
        conn.exec_driver_sql(sql, rows)
        return
    stage = f"{table.name}_stage"
    defs = ", ".join(f"{c} TEXT" for c in names)
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (ord BIGINT, {defs}) ON COMMIT DELETE ROWS")
    n = len(columns["external_id"])
    fields = [(np.arange(n, dtype=">i8"), None)]
    for c in names:
        values = np.asarray(columns[c], dtype=object)
        fields.append((text_bytes(values), pd.isna(values)))
    copy_into(conn, f"COPY {stage} (ord, {', '.join(names)}) FROM STDIN (FORMAT BINARY)", copy_binary(fields))
    selected = ", ".join(f"{c}::jsonb" if c in json else c for c in names)
    conn.exec_driver_sql(
        f"INSERT INTO {name} ({', '.join(names)}) SELECT {selected} FROM {stage} ORDER BY ord "
        f"ON CONFLICT (external_id) DO UPDATE SET {updates}"
    )
    conn.exec_driver_sql(f"TRUNCATE {stage}")


def id_array(conn: Connection, table: Table, external_ids: np.ndarray) -> np.ndarray:
    """[N] internal ids of the external ids (all stored), resolved once for a whole load."""
    found = lookup_ids(conn, table, pd.unique(np.asarray(external_ids, dtype=object)).tolist())
    return pd.Series(found, dtype=np.int64).reindex(external_ids).to_numpy(np.int64)
