"""Fixtures of the serving tests: a trained model store (built once) and a private copy per test."""

from pathlib import Path

import pytest
import torch

from app.db.session import make_sessionmaker
from app.recsys.store import ModelStore
from app.serving.catalogue import CatalogueKeeper
from app.serving.pipeline import RecommendationService
from app.serving.registry import ModelRegistry
from tests.serving import support


@pytest.fixture
def models_dir(trained_store: Path, tmp_path: Path) -> Path:
    return support.private_copy(trained_store, tmp_path)


@pytest.fixture
def loaded(models_dir, engine, session):
    """(registry, sessionmaker): the seeded database and the stored models plus a hybrid over them, loaded
    on the CPU, with one torch thread for the test."""
    support.seed_database(session)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    support.add_hybrid(ModelStore(models_dir))
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    registry.refresh()
    yield registry, make_sessionmaker(engine)
    torch.set_num_threads(threads)


@pytest.fixture
def svc(models_dir, engine, session):
    """The serving pipeline over the seeded database and the stored models (no hybrid), its catalogue loaded
    on first use and brought up to date by ``svc.catalogue.refresh()`` (no background thread in tests)."""
    support.seed_database(session)
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    registry.refresh()
    sessions = make_sessionmaker(engine)
    return RecommendationService(registry, sessions, CatalogueKeeper(sessions))
