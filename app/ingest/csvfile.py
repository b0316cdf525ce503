"""`deeprec import csv PATH`: a header line naming user,item[,rating][,timestamp][,type][,event_id].

Timestamps are Unix seconds or ISO-8601 (naive means UTC); a row without a rating is a `view`
(or --type). Without an event_id column each row gets csv:user:item:ts, so re-imports are no-ops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.ingest.loader import BadRows, ImportReport, Loader, add_event_ids, check_events

ALIASES = {
    "user": "user_id",
    "user_id": "user_id",
    "item": "item_id",
    "item_id": "item_id",
    "rating": "value",
    "value": "value",
    "timestamp": "ts",
    "ts": "ts",
    "time": "ts",
    "type": "type",
    "event_id": "event_id",
}


def _seconds(raw: pd.Series, first_line: int) -> np.ndarray:
    """[N] float seconds from Unix seconds or ISO-8601 text."""
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(np.float64)
    parsed = pd.to_datetime(raw.where(numeric.isna()), utc=True, format="ISO8601", errors="coerce")
    since_epoch = (parsed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)  # any datetime resolution
    seconds = np.where(numeric.notna(), numeric, since_epoch)
    bad = numeric.isna().to_numpy() & parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadRows(f"line {first_line + i}: timestamp: {raw.iloc[i]!r} is neither Unix seconds nor ISO-8601")
    return seconds.astype(np.float64)


def read_csv_events(
    path: Path, *, chunk_size: int, event_type: str | None = None, delimiter: str = ","
) -> Iterator[tuple[int, pd.DataFrame]]:
    """(line number of the chunk's first row, frame with the columns of repository.add_interactions)."""
    header = pd.read_csv(path, nrows=0, sep=delimiter).columns
    rename = {c: ALIASES[c.strip().lower()] for c in header if c.strip().lower() in ALIASES}
    missing = {"user_id", "item_id"} - set(rename.values())
    if missing:
        raise BadRows(f"line 1: the header needs user and item columns, got {list(header)}")
    dtypes = {c: str for c in rename}
    line = 2
    for chunk in pd.read_csv(path, sep=delimiter, usecols=list(rename), dtype=dtypes, chunksize=chunk_size):
        chunk = chunk.rename(columns=rename).reset_index(drop=True)
        values = pd.to_numeric(chunk["value"], errors="coerce") if "value" in chunk else pd.Series(np.nan, chunk.index)
        if "value" in chunk:
            garbled = chunk["value"].notna() & values.isna()
            if garbled.any():
                i = int(np.flatnonzero(garbled.to_numpy())[0])
                raise BadRows(f"line {line + i}: rating: {chunk['value'].iloc[i]!r} is not a number")
        default = np.where(values.isna(), event_type or "view", event_type or "rating")
        types = chunk["type"].fillna(pd.Series(default, chunk.index)) if "type" in chunk else default
        ts = _seconds(chunk["ts"], line) if "ts" in chunk else np.full(len(chunk), time.time())
        frame = pd.DataFrame(
            {
                "user_id": chunk["user_id"].str.strip(),
                "item_id": chunk["item_id"].str.strip(),
                "type": types,
                "value": values.to_numpy(np.float64),
                "ts": ts,
            }
        )
        if "event_id" in chunk:
            frame["event_id"] = chunk["event_id"].to_numpy()
        elif "ts" in chunk:
            frame = add_event_ids(frame, "csv")
        yield line, frame
        line += len(chunk)


def import_csv(
    path: Path,
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    chunk_size: int = 50_000,
    event_type: str | None = None,
    delimiter: str = ",",
) -> ImportReport:
    loader = Loader(sessions)

    def checked() -> Iterator[pd.DataFrame]:
        chunks = read_csv_events(path, chunk_size=chunk_size, event_type=event_type, delimiter=delimiter)
        for first_line, frame in chunks:
            check_events(frame, settings, first_line=first_line)
            yield frame

    loader.events(checked())
    return loader.finish()
