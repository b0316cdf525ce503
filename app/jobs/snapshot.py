"""The training data set of the database: ``app.db.snapshot`` arrays made into an InteractionData.

What ``InteractionData.from_frames(interactions_frame(), items_frame())`` builds, the same arrays and
id maps, but from integer codes: no frame of external id strings per event is ever made.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from app.db.frames import items_frame
from app.db.snapshot import Snapshot, read_snapshot
from app.recsys.data import FeatureSchema, InteractionData, build_feature_schema


def latest_per_pair(snap: Snapshot) -> np.ndarray:
    """[K] positions of the events kept: per (user, item), the latest by time, ties by id (from_frames' dedupe)."""
    order = np.lexsort((np.arange(len(snap)), snap.ts, snap.items, snap.users))  # [N] by pair, then time, then id
    u, i = snap.users[order], snap.items[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return np.sort(order[last])  # back in id order


def snapshot_data(session: Session, *, text_buckets: int = 0) -> tuple[InteractionData, int | None]:
    """(the data set of every stored event and item, the highest interaction id read)."""
    snap = read_snapshot(session)
    items = items_frame(session=session)
    session.rollback()  # end the read transaction; training takes a while
    keep = latest_per_pair(snap)
    if len(items):
        schema = build_feature_schema(items, text_buckets=text_buckets)
        aligned = items.drop_duplicates("item_id", keep="last").set_index("item_id").reindex(snap.item_ids)
        aligned = aligned.reset_index()
        aligned["categories"] = aligned["categories"].apply(lambda c: c if isinstance(c, list) else [])
        feats = schema.encode(aligned)
    else:
        schema, feats = FeatureSchema(), np.zeros((len(snap.item_ids), 0), dtype=np.float32)
    pick = (lambda a: a) if len(keep) == len(snap) else (lambda a: a[keep])  # no repeats: no copies
    data = InteractionData(
        user_ids=snap.user_ids,
        item_ids=snap.item_ids,
        users=pick(snap.users),
        items=pick(snap.items),
        ratings=pick(snap.values),
        ts=pick(snap.ts),
        item_features=feats,
        feature_schema=schema,
    )
    return data, snap.max_id


def database_data(settings: object, *, text_buckets: int = 0) -> tuple[InteractionData, int | None]:
    """``snapshot_data`` of the configured database, read on a short-lived engine."""
    from app.db.session import make_engine, make_sessionmaker

    engine = make_engine(settings)  # type: ignore[arg-type]
    try:
        with make_sessionmaker(engine)() as session:
            return snapshot_data(session, text_buckets=text_buckets)
    finally:
        engine.dispose()
