"""Fixtures of the serving tests: a trained model store (built once) and a private copy per test."""

from pathlib import Path

import pytest

from tests.serving import support


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return support.trained_store(tmp_path_factory)


@pytest.fixture
def models_dir(trained_store: Path, tmp_path: Path) -> Path:
    return support.private_copy(trained_store, tmp_path)
