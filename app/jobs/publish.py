"""The model store as the service uses it: files written whole first, then published in model_version.

:class:`VersionedStore` is the recsys ModelStore with the database as its active pointer: ``save``
renames the complete version folder into place and only then records its row; ``activate`` flips
the active row (and the store's ACTIVE file, kept in step); ``prune`` deletes folders and rows.
``promotion`` is the gate a worker applies to each new version.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.jobs import versions as repo
from app.recsys.models.base import Recommender
from app.recsys.store import FileActivePointer, ModelStore, StoreError, served_names, version_time

log = logging.getLogger(__name__)


class VersionedStore(ModelStore):
    def __init__(
        self, root: Path | str, sessions: sessionmaker[Session], *, index_min_items: int | None = None
    ) -> None:
        files = FileActivePointer(Path(root))
        pointer = repo.DbActivePointer(sessions, Path(root), files)
        super().__init__(root, pointer=pointer, index_min_items=index_min_items)
        self.sessions = sessions
        self.files = files

    def save(
        self, model: Recommender, *, version: str | None = None, name: str | None = None, job_id: int | None = None
    ) -> str:
        name = name or model.name
        version = super().save(model, version=version, name=name)  # complete on disk from here
        with self.sessions() as session:
            repo.record_version(
                session=session, name=name, version=version, metrics=dict(model.metrics),
                trained_at=version_time(version), job_id=job_id,
            )  # fmt: skip
        return version

    def activate(self, name: str, version: str, note: str | None = None) -> None:
        self.path(name, version)  # the folder must exist
        self._record_if_missing(name, version)
        assert isinstance(self.pointer, repo.DbActivePointer)
        self.pointer.set(name, version, note=note)

    def prune(self, name: str, keep: int, *, stale_tmp_s: float = 3600.0) -> list[str]:
        doomed = super().prune(name, keep, stale_tmp_s=stale_tmp_s)
        with self.sessions() as session:
            repo.forget_versions(session=session, name=name, versions=doomed)
        return doomed

    def _record_if_missing(self, name: str, version: str) -> bool:
        with self.sessions() as session:
            if repo.get_version(session=session, name=name, version=version) is not None:
                return False
            try:
                metrics = self.info(name, version).metrics
            except StoreError as e:
                log.error("version not recorded", extra={"model": name, "version": version, "error": str(e)})
                return False
            repo.record_version(
                session=session, name=name, version=version, metrics=metrics, trained_at=version_time(version),
                note="found in the store folder",
            )  # fmt: skip
            return True

    def sync(self) -> int:
        """Record version folders the table does not know (a store trained before the database
        tracked it, or copied in); a model with no active row adopts its ACTIVE file. Returns rows added."""
        added = 0
        for name in self.models():
            if name not in served_names():
                continue
            added += sum(self._record_if_missing(name, v) for v in self.versions(name))
            with self.sessions() as session:
                has_active = repo.active_row(session=session, name=name) is not None
            adopted = self.files.get(name)
            if not has_active and adopted and adopted in self.versions(name):
                self.activate(name, adopted, note="adopted from the store's ACTIVE file")
        return added


def open_store(
    settings: Settings, sessions: sessionmaker[Session] | None = None, *, sync: bool = True
) -> VersionedStore:
    """The service's store on settings.models_dir; without ``sessions`` it opens its own engine."""
    engine = None
    if sessions is None:
        from app.db.session import make_engine, make_sessionmaker

        engine = make_engine(settings)
        sessions = make_sessionmaker(engine)
    store = VersionedStore(settings.models_dir, sessions, index_min_items=settings.ann_min_items)
    if engine is not None:
        weakref.finalize(store, engine.dispose)
    if sync:
        store.sync()
    return store


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def promotion(policy: str, *, new: float | None, active: float | None, active_version: str | None,
              tolerance: float, metric: str = repo.GATE_METRIC) -> Decision:  # fmt: skip
    """The promotion gate. ``auto``: promote unless the new validation ``metric`` is worse than the
    active version's by more than ``tolerance`` (higher NDCG is better, lower RMSE); ``always`` /
    ``never`` do what they say."""
    if policy == "always":
        return Decision(True, "promote=always")
    if policy == "never":
        return Decision(False, "promote=never: kept as a candidate")
    if active_version is None:
        return Decision(True, "no active version yet")
    if new is None or active is None:
        return Decision(True, f"{metric} missing on the new or the active version; nothing to compare")
    n, a = distinct(new, active)
    if repo.lower_is_better(metric):
        if new <= active + tolerance:
            return Decision(True, f"{metric} {n} <= active {a} + tolerance {tolerance:g}")
    elif new >= active - tolerance:
        return Decision(True, f"{metric} {n} >= active {a} - tolerance {tolerance:g}")
    return Decision(
        False,
        f"{metric} {n} is worse than active version {active_version} ({a}) "
        f"by more than the tolerance {tolerance:g}: kept as a candidate",
    )


def distinct(x: float, y: float) -> tuple[str, str]:
    """``x`` and ``y`` with 4 decimals, or as many more (up to 12) as it takes to tell them apart."""
    for digits in range(4, 13):
        a, b = f"{x:.{digits}f}", f"{y:.{digits}f}"
        if a != b:
            return a, b
    return a, b
