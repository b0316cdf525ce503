"""Shared by the serving and API tests: synthetic catalogue + events in the database, and a model store
trained once per test session on the same events (training does not depend on the backend).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from sqlalchemy.orm import Session

from app.db.repository import ItemUpsert, add_interactions, upsert_items
from app.recsys.data import InteractionData
from app.recsys.models.base import TrainConfig
from app.recsys.models.hybrid import Hybrid
from app.recsys.pipeline import train_models
from app.recsys.splits import leave_one_out
from app.recsys.store import ModelStore
from tests.recsys.synthetic import items_frame, taste_frame

N_USERS, N_ITEMS = 40, 30
SERVED = ("popularity", "mf", "gru4rec", "content")
NEW_ITEM = "new-comedy"  # in the catalogue with features only: no model has seen it


def events() -> pd.DataFrame:
    return taste_frame(n_users=N_USERS, n_items=N_ITEMS, per_user=12).assign(type="rating")


def catalogue() -> pd.DataFrame:
    items = items_frame(N_ITEMS)
    new = {"item_id": [NEW_ITEM], "title": ["Comedy new"], "categories": [["Comedy"]], "attributes": [{"year": 2000}]}
    return pd.concat([items, pd.DataFrame(new)], ignore_index=True)


def seed_database(session: Session) -> None:
    items = [ItemUpsert(r.item_id, r.title, list(r.categories), dict(r.attributes)) for r in catalogue().itertuples()]
    upsert_items(session=session, items=items)
    add_interactions(session=session, rows=events())
    session.commit()


def add_event(session: Session, user_id: str, item_id: str, ts: int | None = None) -> None:
    row = {"user_id": user_id, "item_id": item_id, "type": "view", "value": float("nan"), "ts": ts or int(time.time())}
    add_interactions(session=session, rows=pd.DataFrame([row]))
    session.commit()


_TRAINED: dict[str, Path] = {}


def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with SERVED trained (few epochs) on the seeded events, each version active; built once."""
    if "root" in _TRAINED:
        return _TRAINED["root"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("trained") / "models"
        items = catalogue().iloc[:N_ITEMS]  # the new item arrives after training
        data = InteractionData.from_frames(events(), items)
        store = ModelStore(root)
        for r in train_models(data, list(SERVED), params={"epochs": 2, "batch_size": 128}):
            store.activate(r.name, store.save(r.model))
    finally:
        torch.set_num_threads(threads)
    _TRAINED["root"] = root
    return root


def private_copy(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained store, so a test may add, corrupt or activate versions."""
    target = tmp_path / "served-models"
    shutil.copytree(trained, target)
    return target


def assert_same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]], tol: float = 1e-5) -> None:
    """Equal (item, score) rankings to float rounding: scores within ``tol``, and the same item at every
    position except where two neighbouring scores tie within ``tol`` (rounding may swap those)."""
    sa, sb = [s for _, s in a], [s for _, s in b]
    assert sa == pytest.approx(sb, abs=tol)
    for k, ((x, _), (y, _)) in enumerate(zip(a, b, strict=True)):
        if x != y:
            assert any(abs(sa[k] - sa[j]) < tol for j in (k - 1, k + 1) if 0 <= j < len(sa)), (k, a, b)


def add_hybrid(store: ModelStore) -> str:
    """A hybrid over the stored members (weights fitted in a few epochs), saved and activated."""
    members = {n: store.load(n, store.active_version(n)) for n in ("mf", "gru4rec", "content", "popularity")}
    split = leave_one_out(InteractionData.from_frames(events(), catalogue().iloc[:N_ITEMS]))
    hybrid = Hybrid.from_members(members)
    hybrid.fit(split.train, split.valid, TrainConfig(epochs=3, batch_size=64, seed=0))
    version = store.save(hybrid)
    store.activate("hybrid", version)
    return version
