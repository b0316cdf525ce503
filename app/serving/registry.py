"""The models the API serves: the active version of each trained model, loaded onto one device.

Requests read ``registry.models`` once and keep that immutable :class:`ModelSet` to the end, so a
swap (one reference assignment) never changes the models under a running request: requests in
flight finish on the old versions, new ones get the new versions, none fail.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from app.recsys.index import VectorIndex, load_indexes
from app.recsys.models import get_model_class
from app.recsys.models.base import Recommender
from app.recsys.models.ensemble import Ensemble
from app.recsys.store import ModelStore, StoreError, model_of, served_name_of, served_names, version_time
from app.recsys.training import resolve_device

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error, never a silent CPU."""
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ValueError(f"DEEPREC_DEVICE must be auto, cpu or cuda[:N], not {name!r}")
    return resolve_device(name)


def prepare_for_serving(model: Recommender) -> None:
    """Let a model (and an ensemble's members) precompute what only depends on frozen weights."""
    for m in [model, *(model.members.values() if isinstance(model, Ensemble) else ())]:
        m.prepare_for_serving()


def share_members(
    ensemble: Ensemble, digests: Mapping[str, str], current: Mapping[str, LoadedModel], store: ModelStore
) -> None:
    """Replace each member of ``ensemble`` whose weights equal a loaded version's by that version's model
    (a rating stack's members are served under their ``-rating`` names)."""
    for name, member in list(ensemble.members.items()):
        mine = digests.get(f"members/{name}/weights.safetensors")
        served = served_name_of(member)
        lm = current.get(served)
        if mine is not None and lm is not None and store.digests(served, lm.version).get("weights.safetensors") == mine:
            ensemble.members[name] = lm.model


def is_ensemble(served: str) -> bool:
    """Whether a served name is an ensemble's, loaded after its members so that it can share them."""
    try:
        return issubclass(get_model_class(model_of(served)), Ensemble)
    except KeyError:
        return False


FEW_IDS = 32  # below this many ids, one hash look-up each beats building an Index for get_indexer


def positions(index: pd.Index, ids: np.ndarray | list[str]) -> np.ndarray:
    """[N] int64 position of each id in ``index`` (unique), -1 where absent. A request's few ids are looked
    up one by one (``get_loc``, under a microsecond each); ``get_indexer`` costs about 0.1 ms a call
    whatever its size, which was most of a cached recommendation's CPU."""
    if len(ids) > FEW_IDS:
        return index.get_indexer(pd.Index(np.asarray(ids, dtype=object))).astype(np.int64)
    out = np.full(len(ids), -1, dtype=np.int64)
    for i, key in enumerate(ids):
        try:
            out[i] = index.get_loc(key)
        except KeyError:
            continue
    return out


@dataclass
class LoadedModel:
    """One model version on the device, with its ANN indexes and the id look-ups serving needs."""

    name: str
    version: str
    model: Recommender
    trained_at: datetime
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    indexes: dict[str, VectorIndex] = field(default_factory=dict)  # by file name (app.recsys.index)
    cache: dict[str, Any] = field(default_factory=dict)  # lazily built tensors (normalised embeddings)
    items_index: pd.Index | None = None  # external item id -> column; shared by versions of one snapshot
    users_index: pd.Index | None = None

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.model.item_ids, dtype=object)
        if self.items_index is None:
            self.items_index = pd.Index(self.item_ids)
        if self.users_index is None:
            self.users_index = pd.Index(np.asarray(self.model.user_ids, dtype=object))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def metrics(self) -> dict[str, Any]:
        return self.model.metrics

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.model.user_ids)

    def user_of(self, user_id: str) -> int:
        """Training index of a user, -1 when the model never saw them."""
        assert self.users_index is not None
        return int(positions(self.users_index, [user_id])[0])

    def items_of(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Column of each external item id, -1 where unknown."""
        assert self.items_index is not None
        return positions(self.items_index, item_ids)

    def index(self, file: str) -> VectorIndex | None:
        return self.indexes.get(file)


class ModelSet(Mapping[str, LoadedModel]):
    """An immutable name -> LoadedModel view; one consistent set of versions per request."""

    def __init__(self, models: Mapping[str, LoadedModel] | None = None, generation: int = 0) -> None:
        self._models = dict(models or {})
        self.generation = generation
        # Which versions this set serves: part of every cached result's key (a swap changes it).
        self.token = tuple(sorted((name, m.version) for name, m in self._models.items()))

    def __getitem__(self, name: str) -> LoadedModel:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def versions(self) -> dict[str, str]:
        return {name: m.version for name, m in self._models.items()}


def settle_heap() -> float:
    """Collect garbage once, then hide every object that survived from later collections (``gc.freeze``);
    returns the seconds it took.

    A serving process holds a few hundred thousand long-lived objects (torch, pandas, FastAPI, the models
    and catalogue): each full collection walked them all, about 180 ms on a 2-core machine, and the
    collector ran one every few thousand requests, a stall that set the p99. Frozen objects are still
    freed by reference counting; what an earlier call froze is thawed and looked at again first, so an
    old model version swapped out since is collected even if it sits in a reference cycle.
    """
    t0 = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t0


class ModelRegistry:
    """Loads active versions from the store; ``swap`` publishes a new set atomically.

    With ``freeze_heap``, each refresh that changed the loaded versions ends with ``settle_heap``."""

    def __init__(self, store: ModelStore, device: torch.device, freeze_heap: bool = False) -> None:
        self.store = store
        self.device = device
        self.freeze_heap = freeze_heap
        self.models = ModelSet()
        self.ready = False
        self.errors: dict[str, str] = {}  # model -> why its version was refused
        self._ids: weakref.WeakValueDictionary[bytes, pd.Index] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # one loader at a time; readers never lock

    def swap(self, models: ModelSet) -> ModelSet:
        """Publish ``models``; returns the previous set (requests holding it keep using it)."""
        old, self.models = self.models, models
        return old

    def load_version(self, name: str, version: str, current: Mapping[str, LoadedModel] | None = None) -> LoadedModel:
        """A version on the device with its indexes; id look-ups and hybrid members already loaded in
        ``current`` are shared rather than held twice (the versions of one training run share their ids,
        and a hybrid's members are usually the active versions themselves)."""
        model = self.store.load(name, version, device=self.device)
        model.eval()
        prepare_for_serving(model)
        if isinstance(model, Ensemble) and current:
            share_members(model, self.store.digests(name, version), current, self.store)
        for m in [model, *(model.members.values() if isinstance(model, Ensemble) else ())]:
            m.item_ids, m.user_ids = np.asarray(self._interned(m.item_ids)), np.asarray(self._interned(m.user_ids))
        items, users = self._interned(model.item_ids), self._interned(model.user_ids)
        indexes = load_indexes(self.store.path(name, version))
        return LoadedModel(name, version, model, version_time(version), indexes=indexes, items_index=items,
                           users_index=users)  # fmt: skip

    def _interned(self, ids: np.ndarray) -> pd.Index:
        """One pd.Index per distinct id list among the loaded versions (weakly held: dropped with them)."""
        arr = np.asarray(ids, dtype=object)
        key = hashlib.blake2b("\x1f".join(map(str, arr)).encode(), digest_size=16).digest()
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = pd.Index(arr)
        return found

    def wanted_versions(self) -> dict[str, str]:
        """The version each served name (``mf``, ``mf-rating``, ...) should serve: its active one."""
        out = {}
        valid = served_names()
        for name in self.store.models():
            if name not in valid:
                continue
            version = self.store.active_version(name)
            if version is not None:
                out[name] = version
        return out

    def refresh(self, wanted: Mapping[str, str] | None = None) -> ModelSet:
        """Load what changed and swap once; a version that fails to load is refused and the old one kept."""
        with self._lock:
            wanted = dict(self.wanted_versions() if wanted is None else wanted)
            wanted = dict(sorted(wanted.items(), key=lambda kv: is_ensemble(kv[0])))  # members first
            current = self.models
            loaded: dict[str, LoadedModel] = {}
            for name, version in wanted.items():
                if name in current and current[name].version == version:
                    loaded[name] = current[name]
                    continue
                try:
                    loaded[name] = self.load_version(name, version, {**current, **loaded})
                    self.errors.pop(name, None)
                    log.info("model loaded", extra={"model": name, "version": version, "device": str(self.device)})
                except (StoreError, RuntimeError, ValueError, KeyError, OSError) as e:
                    self.errors[name] = str(e)
                    log.error("model refused", extra={"model": name, "version": version, "error": str(e)})
                    if name in current:
                        loaded[name] = current[name]
            new = ModelSet(loaded, current.generation + 1)
            self.swap(new)
            changed = new.versions() != current.versions()
            del current, loaded  # the old versions' last references here, before the collection
            if self.freeze_heap and (changed or not self.ready):
                log.info("heap settled", extra={"seconds": round(settle_heap(), 3), "frozen": gc.get_freeze_count()})
            self.ready = True
            return new
