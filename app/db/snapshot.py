"""The training snapshot as numpy arrays: events as integer codes, external ids once per user and item.

A snapshot of 10M events read as pandas frames of external id strings costs two Python strings per
event; here the events arrive as integers (blocks of binary rows built by the server on PostgreSQL,
keyset-paged reads on SQLite) straight into preallocated arrays, and only the user and item tables are read as
strings. The recommender core builds its data set from this (``app.jobs.snapshot``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from app.db.bulk import driver
from app.db.tables import Interaction

READ_CHUNK = 200_000  # rows per SQLite query; also the growth step when rows arrive that count() missed
# One bytea per block of ids, made by the server: the fixed-width binary rows (big-endian) of PG_ROW, so
# the client does no work per row (a COPY TO stream arrives as one message per row).
COLUMNS = ("id", "user", "item", "value", "ts")
PG_ROW = np.dtype([("id", ">i8"), ("user", ">i8"), ("item", ">i8"), ("value", ">f8"), ("ts", ">i8")])
PG_BLOCK = """
    SELECT string_agg(int8send(id) || int8send(user_id) || int8send(item_id)
                      || float8send(COALESCE(value, 'NaN'::float8))
                      || int8send(FLOOR(EXTRACT(EPOCH FROM occurred_at))::bigint), ''::bytea)
    FROM interaction WHERE id > %s AND id <= %s
"""
SQLITE_PAGE = (
    # NULL values read as 1e999, which SQLite parses as infinity: a stored rating is always finite.
    "SELECT id, user_id, item_id, IFNULL(value, 1e999), CAST(strftime('%s', occurred_at) AS INTEGER) FROM interaction "
    "WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
)


@dataclass(frozen=True)
class Snapshot:
    """Every event stored up to ``max_id``, in id order, over the users with events and every item."""

    user_ids: np.ndarray  # [U] external ids (str objects) of the users with events, sorted
    item_ids: np.ndarray  # [I] external ids of every stored item, sorted
    users: np.ndarray  # [N] int64 index into user_ids
    items: np.ndarray  # [N] int64 index into item_ids
    values: np.ndarray  # [N] float32 rating, NaN where none
    ts: np.ndarray  # [N] int64 Unix seconds (whole, floored)
    max_id: int | None  # highest interaction id read; None when there are no events

    def __len__(self) -> int:
        return len(self.users)


class _Columns:
    """Preallocated event columns filled block by block."""

    def __init__(self, n: int) -> None:
        self.n = 0
        self.id = np.empty(n, dtype=np.int64)
        self.user = np.empty(n, dtype=np.int64)
        self.item = np.empty(n, dtype=np.int64)
        self.value = np.empty(n, dtype=np.float32)
        self.ts = np.empty(n, dtype=np.int64)

    def add(self, block: dict[str, np.ndarray]) -> None:
        k = len(block["id"])
        if self.n + k > len(self.id):  # rows committed after count(): grow
            for name in ("id", "user", "item", "value", "ts"):
                setattr(self, name, np.resize(getattr(self, name), self.n + k + READ_CHUNK))
        for name in ("id", "user", "item", "value", "ts"):
            getattr(self, name)[self.n : self.n + k] = block[name]
        self.n += k


def _pg_blocks(conn: Connection, max_id: int) -> Iterator[dict[str, np.ndarray]]:
    """Blocks of READ_CHUNK ids, each one bytea of fixed-width rows read as a structured array."""
    low = conn.exec_driver_sql("SELECT min(id) FROM interaction").scalar() or 1
    with driver(conn).cursor(binary=True) as cur:
        for start in range(low - 1, max_id, READ_CHUNK):
            data = cur.execute(PG_BLOCK, (start, min(start + READ_CHUNK, max_id))).fetchone()[0]
            if data:
                rows = np.frombuffer(data, dtype=PG_ROW)
                yield {name: rows[name] for name in COLUMNS}


def _sqlite_blocks(conn: Connection, max_id: int) -> Iterator[dict[str, np.ndarray]]:
    """Keyset pages on the driver's own cursor: plain tuples, flattened by np.fromiter without a Python loop."""
    cur = driver(conn).cursor()
    last = 0
    while True:
        rows = cur.execute(SQLITE_PAGE, (last, max_id, READ_CHUNK)).fetchall()
        if not rows:
            return
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=5 * len(rows))
        table = flat.reshape(len(rows), 5)  # [B, 5]: ids and seconds are exact below 2**53
        last = int(table[-1, 0])
        yield {
            "id": table[:, 0].astype(np.int64),
            "user": table[:, 1].astype(np.int64),
            "item": table[:, 2].astype(np.int64),
            "value": np.where(np.isinf(table[:, 3]), np.nan, table[:, 3]),  # NULL came as 1e999 (inf)
            "ts": table[:, 4].astype(np.int64),
        }


def _external(conn: Connection, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(internal ids [K] ascending, external ids [K]) of a whole id table, read on the driver's cursor."""
    cur = driver(conn).cursor()
    try:
        rows = cur.execute(f'SELECT id, external_id FROM "{table}" ORDER BY id').fetchall()
    finally:
        cur.close()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    ids, ext = zip(*rows, strict=True)
    return np.fromiter(ids, dtype=np.int64, count=len(rows)), np.array(ext, dtype=object)


def _codes(internal: np.ndarray, table_ids: np.ndarray, table_ext: np.ndarray, *, only_present: bool):
    """(sorted external ids, [N] index of each event's id into them)."""
    if only_present:
        present, inverse = np.unique(internal, return_inverse=True)  # [K'], [N]
        ext = table_ext[np.searchsorted(table_ids, present)]
    else:
        ext, inverse = table_ext, np.searchsorted(table_ids, internal)
    order = np.argsort(ext, kind="stable")  # string order, as pandas sorts them
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return ext[order], rank[inverse]


def read_snapshot(session: Session) -> Snapshot:
    """Every stored event (up to the highest id at the start) and every item, in one read transaction."""
    conn = session.connection()
    max_id = session.scalar(select(func.max(Interaction.id)))
    n = session.scalar(select(func.count()).select_from(Interaction).where(Interaction.id <= (max_id or 0))) or 0
    cols = _Columns(n)
    if max_id is not None:
        blocks = _pg_blocks(conn, max_id) if conn.dialect.name == "postgresql" else _sqlite_blocks(conn, max_id)
        for block in blocks:
            cols.add(block)
    ids, user, item, value, ts = (a[: cols.n] for a in (cols.id, cols.user, cols.item, cols.value, cols.ts))
    if len(ids) > 1 and not (np.diff(ids) > 0).all():  # COPY reads in table order: usually id order already
        order = np.argsort(ids, kind="stable")
        user, item, value, ts = user[order], item[order], value[order], ts[order]
    user_ids, users = _codes(user, *_external(conn, "user"), only_present=True)
    item_ids, items = _codes(item, *_external(conn, "item"), only_present=False)
    return Snapshot(user_ids, item_ids, users, items, value, ts, max_id)
