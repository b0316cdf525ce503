"""ANN indexes: built with a saved version above the size threshold, covered by its checksums, and close to
exact search."""

import json

import numpy as np
import pytest
import torch

from app.recsys.index import RETRIEVAL_FILE, SIMILAR_FILE, VectorIndex, load_indexes
from app.recsys.models.base import TrainConfig
from app.recsys.models.mf import MF, MFConfig
from app.recsys.models.popularity import Popularity
from app.recsys.splits import leave_one_out
from app.recsys.store import MANIFEST_FILE, CorruptVersion, ModelStore
from tests.recsys.synthetic import taste_data


@pytest.fixture(scope="module")
def mf():
    split = leave_one_out(taste_data(n_users=60, n_items=80))
    model = MF(MFConfig(dim=16))
    model.fit(split.train, split.valid, TrainConfig(epochs=3, batch_size=256, seed=0))
    return model


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_search_finds_the_exact_neighbours():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5000, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    index = VectorIndex.build(vectors, "ip")
    keys, scores = index.search(queries, 10)
    truth = exact_top(vectors, queries, 10)
    recall = np.mean([len(set(k) & set(t)) / 10 for k, t in zip(keys, truth, strict=True)])
    assert recall >= 0.95
    # the similarities are the inner products of the keys found (within half precision), best first
    dots = np.take_along_axis(queries @ vectors.T, keys, axis=1)
    assert np.allclose(scores, dots, atol=0.05)
    assert np.all(np.diff(scores, axis=1) <= 1e-3)


def test_fewer_items_than_asked_are_padded():
    index = VectorIndex.build(np.eye(3, dtype=np.float32), "cos")
    keys, scores = index.search(np.ones((1, 3), np.float32), 5)
    assert keys.shape == (1, 3) and sorted(keys[0]) == [0, 1, 2]


def test_a_version_above_the_threshold_carries_its_indexes(mf, tmp_path):
    store = ModelStore(tmp_path, index_min_items=mf.n_items)
    version = store.save(mf)
    folder = store.path("mf", version)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert {RETRIEVAL_FILE, SIMILAR_FILE} <= set(manifest["files"])
    indexes = load_indexes(folder)
    assert set(indexes) == {RETRIEVAL_FILE, SIMILAR_FILE} and len(indexes[RETRIEVAL_FILE]) == mf.n_items
    # the loaded index answers as the model's own vectors do
    queries = mf.user_queries(None, np.arange(5)).numpy()
    keys, _ = indexes[RETRIEVAL_FILE].search(queries, 5)
    truth = exact_top(mf.item_vectors().numpy(), queries, 5)
    assert np.mean([len(set(k) & set(t)) / 5 for k, t in zip(keys, truth, strict=True)]) >= 0.8
    # a changed index file is caught by the manifest, as a changed weights file is
    data = bytearray((folder / RETRIEVAL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / RETRIEVAL_FILE).write_bytes(bytes(data))
    with pytest.raises(CorruptVersion, match=RETRIEVAL_FILE):
        store.load("mf", version)


def test_below_the_threshold_or_without_vectors_no_index_is_written(mf, tmp_path):
    store = ModelStore(tmp_path, index_min_items=mf.n_items + 1)
    assert not load_indexes(store.path("mf", store.save(mf)))
    pop = Popularity()
    pop.user_ids, pop.item_ids = mf.user_ids, mf.item_ids
    pop.net = pop.build(n_users=len(mf.user_ids), n_items=mf.n_items)
    pop.net.counts.copy_(torch.arange(mf.n_items, dtype=torch.float32))
    store = ModelStore(tmp_path / "low", index_min_items=1)
    assert not load_indexes(store.path("popularity", store.save(pop)))
