"""The model_version table: which versions exist in the store and which one of each model is active.

This table is the source of truth for what every API process serves. A row is written only after
its version folder is complete (the store renames it into place first), and activation flips the
old active row to ``retired`` and the new one to ``active`` in one transaction; a partial unique
index keeps at most one active row per model even when two processes activate at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.tables import ModelVersion
from app.recsys.metrics import VALIDATION_RMSE_KEYS, validation_rmse
from app.recsys.store import RATING_SUFFIX

GATE_METRIC = "valid_ndcg@10"  # the validation metric the promotion gate compares (higher is better)
ACTIVATE_TRIES = 3


class UnknownVersion(LookupError):
    pass


def gate_metric(name: str, metrics: Mapping[str, Any]) -> tuple[str, float | None]:
    """The validation metric the promotion gate compares for versions of ``name``, and its value in
    ``metrics``: NDCG@10 for ranking models, the comparable validation RMSE (lower is better) for the
    ``-rating`` names (rating versions)."""
    if name.endswith(RATING_SUFFIX):
        return validation_rmse(metrics) or (VALIDATION_RMSE_KEYS[-1], None)
    value = metrics.get(GATE_METRIC)
    return GATE_METRIC, float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def lower_is_better(metric: str) -> bool:
    return "rmse" in metric or "mae" in metric


def get_version(*, session: Session, name: str, version: str) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def list_versions(*, session: Session, name: str) -> list[ModelVersion]:
    """Every recorded version of one model, oldest first (version ids sort by time)."""
    stmt = select(ModelVersion).where(ModelVersion.name == name).order_by(ModelVersion.version)
    return list(session.scalars(stmt.execution_options(populate_existing=True)))


def active_row(*, session: Session, name: str) -> ModelVersion | None:
    stmt = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.status == "active")
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def active_versions(*, session: Session) -> dict[str, str]:
    """name -> active version, for every model that has one (one query; the API polls this)."""
    rows = session.execute(select(ModelVersion.name, ModelVersion.version).where(ModelVersion.status == "active"))
    return {name: version for name, version in rows}


def active_activations(*, session: Session) -> dict[str, tuple[str, datetime | None]]:
    """name -> (active version, when it was activated): a version activated again gets a new time."""
    rows = session.execute(
        select(ModelVersion.name, ModelVersion.version, ModelVersion.activated_at).where(
            ModelVersion.status == "active"
        )
    )
    return {name: (version, at) for name, version, at in rows}


def record_version(
    *,
    session: Session,
    name: str,
    version: str,
    metrics: dict[str, Any],
    trained_at: datetime,
    job_id: int | None = None,
    note: str | None = None,
) -> ModelVersion:
    """Insert a candidate row for a complete version folder (idempotent); commits."""
    existing = get_version(session=session, name=name, version=version)
    if existing is not None:
        return existing
    metric, value = gate_metric(name, metrics)
    row = ModelVersion(
        name=name, version=version, status="candidate", metrics=metrics, metric_name=metric,
        metric_value=value, job_id=job_id, note=note,
        trained_at=trained_at, created_at=datetime.now(UTC),
    )  # fmt: skip
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # recorded by another process meanwhile
        session.rollback()
        found = get_version(session=session, name=name, version=version)
        assert found is not None
        return found
    return row


def activate_version(*, session: Session, name: str, version: str, note: str | None = None) -> str | None:
    """Make ``version`` the active one of ``name``; returns the version that was active before."""
    for attempt in range(ACTIVATE_TRIES):
        try:
            return _activate_once(session, name, version, note)
        except IntegrityError:  # another process activated a version of this model at the same moment
            session.rollback()
            if attempt == ACTIVATE_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _activate_once(session: Session, name: str, version: str, note: str | None) -> str | None:
    target = get_version(session=session, name=name, version=version)
    if target is None:
        session.rollback()
        raise UnknownVersion(f"no recorded version {version!r} of model {name!r}")
    previous = active_row(session=session, name=name)
    if previous is not None and previous.version == version:
        session.commit()
        return version
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.name == name, ModelVersion.status == "active")
        .values(status="retired")
        .execution_options(synchronize_session=False)
    )
    values: dict[str, Any] = {"status": "active", "activated_at": datetime.now(UTC)}
    if note is not None:
        values["note"] = note
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.id == target.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return previous.version if previous is not None else None


def set_note(*, session: Session, name: str, version: str, note: str) -> None:
    session.execute(
        update(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version).values(note=note)
    )
    session.commit()


def forget_versions(*, session: Session, name: str, versions: Sequence[str]) -> int:
    """Delete the rows of versions whose folders were pruned; an active row is never deleted."""
    if not versions:
        return 0
    result = session.execute(
        delete(ModelVersion).where(
            ModelVersion.name == name, ModelVersion.version.in_(list(versions)), ModelVersion.status != "active"
        )
    )
    session.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]


class DbActivePointer:
    """The store's ActivePointer backed by model_version; the store's ACTIVE files are kept in step.

    ``files`` (the store's own file pointer) is written after each activation, so tools reading the
    store folder alone (``deeprec models``) agree with the database.
    """

    def __init__(self, sessions: sessionmaker[Session], root: Path, files: Any | None = None) -> None:
        self.sessions = sessions
        self.root = Path(root)
        self.files = files

    def get(self, name: str) -> str | None:
        with self.sessions() as session:
            row = active_row(session=session, name=name)
            return row.version if row is not None else None

    def set(self, name: str, version: str, note: str | None = None) -> None:
        with self.sessions() as session:
            activate_version(session=session, name=name, version=version, note=note)
        if self.files is not None:
            self.files.set(name, version)
