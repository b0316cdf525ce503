"""Write streams of frames to the database: one transaction per chunk, bulk statements only.

Imports give their events deterministic event_ids, so a chunk that was committed before a
failure is skipped as duplicates when the import is run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db import bulk, repository
from app.db.repository import EVENT_TYPES
from app.db.tables import ID_LENGTH

UPSERT_CHUNK = 100_000  # items or users per upsert statement of a bulk load


class BadRows(ValueError):
    """Rows of an input file that cannot be stored; the message names the line and the field."""


@dataclass
class ImportReport:
    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    users: int = 0
    items: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def summary(self, what: str) -> str:
        rate = self.events / max(self.seconds, 1e-9)
        return (
            f"{what}: {self.events:,} events ({self.inserted:,} new, {self.duplicates:,} duplicates), "
            f"{self.users:,} users, {self.items:,} items in {self.seconds:.1f}s ({rate:,.0f} events/s)"
        )


ID_RULE = f"empty, longer than {ID_LENGTH} characters, or holding '/', NUL or only '.' or '..'"


def _bad_ids(ids: pd.Series) -> np.ndarray:
    """[N] True where an id breaks the API's id rules (app.api.fields): missing, blank, longer than
    ID_LENGTH, or not addressable as one URL path segment ("/", NUL, "." or ".."): an imported id must
    be one a client can ask for."""
    text = ids.astype(str)
    blank = (text.str.strip().str.len() == 0).to_numpy()
    unaddressable = (text.str.contains("/", regex=False) | text.str.contains("\x00", regex=False)).to_numpy()
    relative = text.isin([".", ".."]).to_numpy()
    return ids.isna().to_numpy() | blank | (text.str.len() > ID_LENGTH).to_numpy() | unaddressable | relative


def check_events(frame: pd.DataFrame, settings: Settings, *, first_line: int = 1) -> None:
    """Raise BadRows naming the first bad line; the same rules as POST /v1/interactions."""
    values = frame["value"].to_numpy(np.float64)  # [N], NaN when there is no rating
    ts = frame["ts"].to_numpy(np.float64)  # [N]
    rated = ~np.isnan(values)
    lo, hi = settings.rating_min, settings.rating_max
    types = frame["type"]
    checks: list[tuple[np.ndarray, Callable[[int], str]]] = [
        (_bad_ids(frame["user_id"]), lambda i: f"user_id: {ID_RULE}"),
        (_bad_ids(frame["item_id"]), lambda i: f"item_id: {ID_RULE}"),
        (rated & ((values < lo) | (values > hi) | ~np.isfinite(values)),
         lambda i: f"rating: {values[i]} outside the rating scale {lo}-{hi}"),
        (~types.isin(EVENT_TYPES).to_numpy(), lambda i: f"type: unknown event type {types.iloc[i]!r}"),
        ((types == "rating").to_numpy() & ~rated, lambda i: "rating: missing for a rating event"),
        (~np.isfinite(ts) | (ts > time.time() + settings.future_tolerance_s),
         lambda i: f"timestamp: {ts[i]} is missing or in the future"),
    ]  # fmt: skip
    bad_rows = [(int(np.flatnonzero(mask)[0]), describe) for mask, describe in checks if mask.any()]
    if bad_rows:
        row, describe = min(bad_rows, key=lambda pair: pair[0])
        raise BadRows(f"line {first_line + row}: {describe(row)}")


def add_event_ids(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """event_id = prefix:user:item:ts, so importing the same file twice stores nothing twice."""
    ids = prefix + ":" + frame["user_id"] + ":" + frame["item_id"] + ":" + frame["ts"].astype("int64").astype(str)
    return frame.assign(event_id=ids)


class Loader:
    """Writes items, users and chunks of events, one transaction each; reports what changed."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.report = ImportReport()
        with sessions() as session:
            self._before = repository.counts(session=session)

    def items(self, items: pd.DataFrame) -> None:
        """Columns item_id and optionally title, categories (list), attributes (dict)."""

        def col(name: str) -> list[Any]:
            return items[name].tolist() if name in items else [None] * len(items)

        upserts = [
            repository.ItemUpsert(item_id=str(i), title=t, categories=c, attributes=a)
            for i, t, c, a in zip(col("item_id"), col("title"), col("categories"), col("attributes"), strict=True)
        ]
        with self.sessions() as session:
            repository.upsert_items(session=session, items=upserts)
            session.commit()

    def users(self, users: pd.DataFrame) -> None:
        """Columns user_id and attributes (dict)."""
        pairs = list(zip(users["user_id"].astype(str).tolist(), users["attributes"].tolist(), strict=True))
        with self.sessions() as session:
            repository.upsert_users(session=session, users=pairs)
            session.commit()

    def events(self, chunks: Iterable[pd.DataFrame]) -> None:
        """Each chunk has the columns of repository.add_interactions."""
        for chunk in chunks:
            with self.sessions() as session:
                result = repository.add_interactions(session=session, rows=chunk)
                session.commit()
            self.report.events += len(chunk)
            self.report.inserted += result.inserted
            self.report.duplicates += result.duplicates

    def item_columns(self, chunks: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
        """Upsert items given as chunks of columns (external_id, title, categories and attributes as JSON
        text); returns [M] their internal ids, so events can be written by index from then on."""
        return self._upsert_columns(repository.ITEM, chunks)

    def user_columns(self, chunks: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
        """Upsert users given as chunks of columns (external_id, attributes as JSON text); returns [N] ids."""
        return self._upsert_columns(repository.USER, chunks)

    def _upsert_columns(self, table: Table, chunks: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
        """One transaction, one statement per chunk: the driver's per-row objects and the chunk's text
        stay bounded by the chunk (UPSERT_CHUNK rows for the demo)."""
        ids = []
        with self.sessions() as session:
            conn = session.connection()
            for columns in chunks:
                bulk.upsert_columns(conn, table, columns, json=("categories", "attributes"))
                ids.append(bulk.id_array(conn, table, columns["external_id"]))
            session.commit()
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    def event_codes(self, chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """Ratings of stored users and items: chunks of (user ids, item ids, values, Unix seconds), each [E]
        and internal ids; written in the order ``events`` would write them (by user, then time)."""
        for user_ids, item_ids, values, ts in chunks:
            order = np.lexsort((ts, user_ids))  # [E] stable, as add_interactions orders rows
            occurred_us = ts[order].astype(np.int64) * 1_000_000
            with self.sessions() as session:
                inserted = bulk.insert_interactions(
                    session.connection(),
                    user_ids=user_ids[order],
                    item_ids=item_ids[order],
                    types=["rating"] * len(order),
                    values=np.asarray(values, dtype=np.float64)[order],
                    occurred_us=occurred_us,
                    event_ids=None,
                )
                session.commit()
            self.report.events += len(order)
            self.report.inserted += inserted
            self.report.duplicates += len(order) - inserted

    def finish(self) -> ImportReport:
        """The report, with the users and items this import created."""
        with self.sessions() as session:
            after = repository.counts(session=session)
        self.report.users = after.users - self._before.users
        self.report.items = after.items - self._before.items
        return self.report
