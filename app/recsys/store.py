"""Versioned model store on the filesystem: ``<root>/<model>/<version>/``, written whole then renamed in.

A version folder holds the model's own files (weights.safetensors + meta.json, no pickle), its ANN
indexes on a large catalogue (``app.recsys.index``) and a ``manifest.json`` with the size and SHA-256
of every file, so a truncated or corrupt artefact is refused on load. Which version is *active* is
kept behind :class:`ActivePointer`: here a file per model replaced atomically; a database table can
take its place without touching the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import torch

from app.recsys.index import write_indexes
from app.recsys.models import get_model_class, model_names
from app.recsys.models.base import META_FILE, Recommender, trained_on_ratings

MANIFEST_FILE = "manifest.json"
ACTIVE_FILE = "ACTIVE"
_VERSION_RE = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{6}$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_TMP_PREFIX = ".tmp-"
RATING_SUFFIX = "-rating"  # versions trained with objective 'rating' live beside the ranking ones


class StoreError(Exception):
    """Base class for model-store errors."""


class VersionNotFound(StoreError):
    pass


class CorruptVersion(StoreError):
    """A version's files are missing, truncated or do not match their manifest."""


def new_version_id(now: datetime | None = None) -> str:
    """Sortable id: UTC time to the microsecond plus a random suffix, e.g. 20250101T120000123456Z-1f2e3d."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"


def version_time(version: str) -> datetime:
    """When a version was written, read back from its id."""
    return datetime.strptime(version.split("Z-")[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def served_name(model_name: str, objective: str | None = None) -> str:
    """The name a version of ``model_name`` trained with ``objective`` is saved, recorded, activated,
    pruned and served under: ``<model>-rating`` for a rating-capable model trained on ratings, so it
    is active beside the ranking version; the plain name otherwise (a model without a rating
    objective trains for ranking whatever the run asks)."""
    if objective != "rating":
        return model_name
    try:
        cls = get_model_class(model_name)
        rates, own = cls.supports_rating, cls.rating_only
    except KeyError:
        rates, own = True, False
    return f"{model_name}{RATING_SUFFIX}" if rates and not own else model_name


def trained_objective(model: Recommender) -> str:
    """'rating' for a model trained on ratings (its predictions are on the data set's scale), else 'implicit'."""
    return "rating" if trained_on_ratings(model) else "implicit"


def served_name_of(model: Recommender) -> str:
    """:func:`served_name` for a trained model, from the objective it was trained with."""
    return served_name(model.name, trained_objective(model))


def model_of(name: str) -> str:
    """The registered model a served name is a version of: 'mf-rating' -> 'mf'; a registered name
    ('hybrid-rating', the rating stack) and others unchanged."""
    if name in model_names():
        return name
    base = name.removesuffix(RATING_SUFFIX)
    return base if base != name and base in model_names() else name


def served_names() -> list[str]:
    """Every name a version can be served under: the registered models, then the ``-rating`` name
    of each rating-capable one."""
    names = model_names()
    return names + [n for n in (served_name(m, "rating") for m in names) if n not in names]


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise StoreError(f"invalid model name {name!r}")
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ActivePointer(Protocol):
    """Where the active version of each model is recorded (file here; the DB later)."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, version: str) -> None: ...


class FileActivePointer:
    """``<root>/<model>/ACTIVE`` holds the version id; replaced with os.replace, so readers never see half."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def get(self, name: str) -> str | None:
        try:
            value = (self.root / name / ACTIVE_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def set(self, name: str, version: str) -> None:
        folder = self.root / name
        tmp = folder / f"{_TMP_PREFIX}{ACTIVE_FILE}-{secrets.token_hex(4)}"
        tmp.write_text(version + "\n")
        os.replace(tmp, folder / ACTIVE_FILE)


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    path: Path
    trained_at: datetime
    metrics: dict[str, Any]
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "trained_at": self.trained_at.isoformat(),
            "metrics": self.metrics,
            "size_bytes": self.size_bytes,
        }


class ModelStore:
    """Save, list, load, activate and prune model versions under one root folder."""

    def __init__(
        self, root: Path | str, pointer: ActivePointer | None = None, *, index_min_items: int | None = None
    ) -> None:
        """``index_min_items``: a saved version of a catalogue at least this large gets its ANN indexes
        (:mod:`app.recsys.index`); None: never."""
        self.root = Path(root)
        self.pointer: ActivePointer = pointer if pointer is not None else FileActivePointer(self.root)
        self.index_min_items = index_min_items

    # -- writing ----------------------------------------------------------------------------------
    def save(self, model: Recommender, *, version: str | None = None, name: str | None = None) -> str:
        """Write ``model`` as a new version of ``name`` (default: the model's own name; publishers pass
        :func:`served_name_of`); it appears under its final name only once complete."""
        name = _check_name(name or model.name)
        version = version or new_version_id()
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_TMP_PREFIX}{version}"
        try:
            model.save(tmp)
            index_seconds = write_indexes(model, tmp, self.index_min_items)
            files = sorted(p for p in tmp.rglob("*") if p.is_file())
            manifest = {
                "name": name,
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "index_build_seconds": index_seconds,
                "files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
            for p in [*files, tmp / MANIFEST_FILE]:
                _fsync(p)
            os.rename(tmp, folder / version)  # atomic on one filesystem; fails if the version exists
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    # -- reading ----------------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def versions(self, name: str) -> list[str]:
        """Complete versions of one model, oldest first (ids sort by time)."""
        folder = self.root / _check_name(name)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _VERSION_RE.match(p.name))

    def latest(self, name: str) -> str | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def path(self, name: str, version: str) -> Path:
        if not _VERSION_RE.match(version):
            raise VersionNotFound(f"invalid version id {version!r}")
        path = self.root / _check_name(name) / version
        if not path.is_dir():
            raise VersionNotFound(f"no version {version!r} of model {name!r} in {self.root}")
        return path

    def info(self, name: str, version: str) -> VersionInfo:
        path = self.path(name, version)
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CorruptVersion(f"{name}/{version}: unreadable {META_FILE}: {e}") from e
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return VersionInfo(name, version, path, version_time(version), meta.get("metrics", {}), size)

    def verify(self, name: str, version: str) -> Path:
        """Check every file against the manifest; raises CorruptVersion naming the first bad file."""
        path = self.path(name, version)
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
        except (OSError, ValueError) as e:
            raise CorruptVersion(f"{name}/{version}: missing or unreadable {MANIFEST_FILE}: {e}") from e
        for rel, expected in manifest.get("files", {}).items():
            f = path / rel
            if not f.is_file():
                raise CorruptVersion(f"{name}/{version}: {rel} is missing")
            size = f.stat().st_size
            if size != expected["size"]:
                raise CorruptVersion(
                    f"{name}/{version}: {rel} is {size} bytes, expected {expected['size']} (truncated?)"
                )
            if _sha256(f) != expected["sha256"]:
                raise CorruptVersion(f"{name}/{version}: {rel} does not match its checksum")
        return path

    def digests(self, name: str, version: str) -> dict[str, str]:
        """The SHA-256 of each file of a version, from its manifest (empty when it has none)."""
        try:
            manifest = json.loads((self.path(name, version) / MANIFEST_FILE).read_text())
        except (OSError, ValueError, StoreError):
            return {}
        return {rel: f["sha256"] for rel, f in manifest.get("files", {}).items()}

    def load(self, name: str, version: str | None = None, device: torch.device | str = "cpu") -> Recommender:
        """Load a version (default: the active one, else the latest) onto ``device``, verified first."""
        version = version or self.active_version(name) or self.latest(name)
        if version is None:
            raise VersionNotFound(f"model {name!r} has no versions in {self.root}")
        path = self.verify(name, version)
        try:
            model = get_model_class(model_of(name)).load(path, device=device)
        except (KeyError, ValueError, RuntimeError, OSError) as e:
            raise CorruptVersion(f"{name}/{version}: cannot be loaded: {e}") from e
        return model

    # -- publishing -------------------------------------------------------------------------------
    def activate(self, name: str, version: str) -> None:
        self.path(name, version)  # must exist
        self.pointer.set(name, version)

    def active_version(self, name: str) -> str | None:
        version = self.pointer.get(_check_name(name))
        return version if version and (self.root / name / version).is_dir() else None

    def prune(self, name: str, keep: int, *, stale_tmp_s: float = 3600.0) -> list[str]:
        """Delete all but the newest ``keep`` versions; the active version is always kept.

        Temporary folders left by writers that died more than ``stale_tmp_s`` ago go too.
        """
        folder = self.root / _check_name(name)
        cutoff = time.time() - stale_tmp_s
        for tmp in folder.glob(f"{_TMP_PREFIX}*") if folder.is_dir() else []:
            if tmp.stat().st_mtime < cutoff:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
        versions = self.versions(name)
        active = self.active_version(name)
        doomed = [v for v in versions[: max(len(versions) - max(keep, 1), 0)] if v != active]
        for v in doomed:
            target = self.root / name / v
            trash = target.with_name(f"{_TMP_PREFIX}del-{v}")
            os.rename(target, trash)  # vanish from listings at once, then delete
            shutil.rmtree(trash, ignore_errors=True)
        return doomed
