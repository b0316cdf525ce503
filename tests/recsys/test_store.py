"""Model store: versions appear whole, sort by time, load verified, prune keeps the active one."""

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import torch

from app.recsys.models.base import TrainConfig
from app.recsys.models.mf import MF, MFConfig
from app.recsys.models.popularity import Popularity
from app.recsys.store import (
    ACTIVE_FILE,
    CorruptVersion,
    ModelStore,
    VersionNotFound,
    model_of,
    new_version_id,
    served_name,
    served_name_of,
    served_names,
    version_time,
)
from tests.recsys.synthetic import taste_data


@pytest.fixture(scope="module")
def data():
    return taste_data(n_users=30, n_items=20, per_user=8)


@pytest.fixture(scope="module")
def mf(data):
    model = MF(MFConfig(dim=8))
    model.fit(data, None, TrainConfig(epochs=1, batch_size=128))
    model.metrics = {"valid_ndcg@10": 0.5}
    return model


def test_version_ids_sort_by_time():
    t = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ids = [new_version_id(t + timedelta(microseconds=d)) for d in (0, 1, 999_999, 86_400_000_000)]
    assert ids == sorted(ids)
    assert version_time(ids[0]) == t
    assert new_version_id(t) != new_version_id(t)  # random suffix: two writers never collide


def test_save_load_round_trip(tmp_path, mf, data):
    store = ModelStore(tmp_path)
    version = store.save(mf)
    assert store.models() == ["mf"] and store.versions("mf") == [version]
    loaded = store.load("mf", version)
    users = torch.arange(data.n_users)
    assert torch.equal(loaded.score_users(users), mf.score_users(users))
    info = store.info("mf", version)
    assert info.metrics == {"valid_ndcg@10": 0.5} and info.size_bytes > 0
    assert info.trained_at == version_time(version)


def test_write_is_atomic_no_partial_version_visible(tmp_path, mf):
    store = ModelStore(tmp_path)

    class Exploding(MF):
        def save(self, path):
            super().save(path)
            raise OSError("disk full")

    broken = Exploding(mf.config)
    broken.__dict__.update(mf.__dict__)
    with pytest.raises(OSError, match="disk full"):
        store.save(broken)
    assert store.versions("mf") == []
    assert os.listdir(tmp_path / "mf") == []  # the temporary folder was removed


def test_truncated_weights_refused(tmp_path, mf):
    store = ModelStore(tmp_path)
    version = store.save(mf)
    weights = tmp_path / "mf" / version / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    with pytest.raises(CorruptVersion, match="truncated"):
        store.load("mf", version)


def test_corrupt_weights_refused(tmp_path, mf):
    store = ModelStore(tmp_path)
    version = store.save(mf)
    weights = tmp_path / "mf" / version / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CorruptVersion, match="checksum"):
        store.load("mf", version)


def test_missing_manifest_refused(tmp_path, mf):
    store = ModelStore(tmp_path)
    version = store.save(mf)
    (tmp_path / "mf" / version / "manifest.json").unlink()
    with pytest.raises(CorruptVersion, match="manifest"):
        store.load("mf", version)


def test_activate_and_load_default(tmp_path, mf, data):
    store = ModelStore(tmp_path)
    old, new = store.save(mf), store.save(mf)
    assert store.active_version("mf") is None
    assert store.load("mf") is not None  # no active version: the latest
    store.activate("mf", old)
    assert store.active_version("mf") == old
    assert (tmp_path / "mf" / ACTIVE_FILE).read_text().strip() == old
    store.activate("mf", new)
    assert store.active_version("mf") == new
    with pytest.raises(VersionNotFound):
        store.activate("mf", "20990101T000000000000Z-abcdef")
    assert not [p for p in os.listdir(tmp_path / "mf") if p.startswith(".tmp")]


def test_prune_keeps_newest_and_active(tmp_path, data):
    store = ModelStore(tmp_path)
    pop = Popularity()
    pop.fit(data, None, TrainConfig())
    versions = [store.save(pop) for _ in range(5)]
    store.activate("popularity", versions[0])
    removed = store.prune("popularity", keep=2)
    assert removed == versions[1:3]
    assert store.versions("popularity") == [versions[0], *versions[3:]]
    assert store.load("popularity").net.counts.sum() == data.n_interactions


def test_prune_removes_stale_temporary_folders(tmp_path, data):
    store = ModelStore(tmp_path)
    pop = Popularity()
    pop.fit(data, None, TrainConfig())
    store.save(pop)
    stale = tmp_path / "popularity" / ".tmp-crashed"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = tmp_path / "popularity" / ".tmp-writing"
    fresh.mkdir()
    store.prune("popularity", keep=5)
    assert not stale.exists() and fresh.exists()


def test_unknown_names_and_versions(tmp_path):
    store = ModelStore(tmp_path)
    assert store.models() == [] and store.versions("mf") == []
    with pytest.raises(VersionNotFound):
        store.load("mf")
    with pytest.raises(VersionNotFound):
        store.path("mf", "../../etc")


def test_loads_onto_requested_device(tmp_path, mf):
    store = ModelStore(tmp_path)
    store.save(mf)
    model = store.load("mf", device="cpu")
    assert all(p.device.type == "cpu" for p in model.net.parameters())
    assert np.array_equal(model.item_ids, mf.item_ids)


def test_served_names_put_rating_versions_beside_ranking_ones():
    assert [served_name(n, "rating") for n in ("mf", "content")] == ["mf-rating", "content-rating"]
    assert served_name("hybrid", "rating") == "hybrid"  # it ranks; a rating run trains hybrid-rating instead
    assert served_name("hybrid-rating", "rating") == served_name("hybrid-rating") == "hybrid-rating"  # its own name
    assert served_name("mf") == served_name("mf", "implicit") == "mf"
    assert served_name("popularity", "rating") == "popularity"  # no rating objective: it trains for ranking
    assert [model_of(n) for n in ("mf-rating", "hybrid-rating", "hybrid", "popularity-rating", "nope-rating")] == [
        "mf", "hybrid-rating", "hybrid", "popularity", "nope-rating"]  # fmt: skip
    names = served_names()
    assert {"mf", "hybrid", "mf-rating", "gmf-rating", "hybrid-rating"} <= set(names)
    assert "popularity-rating" not in names and "sasrec-rating" not in names


def test_rating_version_saved_and_loaded_under_its_served_name(tmp_path, mf, data):
    rated = MF(MFConfig(dim=8))
    rated.fit(data, None, TrainConfig(epochs=1, batch_size=128, objective="rating"))
    assert served_name_of(rated) == "mf-rating" and served_name_of(mf) == "mf"
    store = ModelStore(tmp_path)
    ranking, rating = store.save(mf), store.save(rated, name=served_name_of(rated))
    store.activate("mf", ranking)
    store.activate("mf-rating", rating)
    assert store.models() == ["mf", "mf-rating"] and store.versions("mf-rating") == [rating]
    assert (store.active_version("mf"), store.active_version("mf-rating")) == (ranking, rating)
    loaded = store.load("mf-rating")
    assert isinstance(loaded, MF) and loaded.extra["objective"] == "rating"
    assert store.load("mf").extra["objective"] == "implicit"
    assert store.prune("mf-rating", keep=1) == [] and store.versions("mf") == [ranking]
