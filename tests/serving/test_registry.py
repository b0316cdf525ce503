"""Model registry: loads active versions, picks the device, swaps atomically, refuses corrupt versions."""

import gc
import threading
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys.store import ModelStore
from app.serving.pipeline import user_batch
from app.serving.registry import FEW_IDS, LoadedModel, ModelRegistry, ModelSet, positions, select_device
from tests.serving.support import SERVED


def test_loads_every_active_version(models_dir):
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"))
    assert not registry.ready
    models = registry.refresh()
    assert registry.ready and set(models) == set(SERVED)
    for name, lm in models.items():
        assert lm.version == store.active_version(name)
        assert lm.device.type == "cpu"
        assert all(p.device.type == "cpu" for p in lm.model.net.parameters())
        assert lm.metrics["valid_ndcg@10"] >= 0


def test_device_selection_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_device("tpu")


def test_auto_means_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


def test_swap_keeps_held_snapshot_intact(models_dir):
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    first = registry.refresh()
    held = registry.models
    mf = first["mf"]
    old = registry.swap(ModelSet({"mf": mf}, first.generation + 1))
    assert old is held and set(held) == set(SERVED)  # the request that holds it sees no change
    assert set(registry.models) == {"mf"}


def test_refresh_reuses_unchanged_and_loads_new_version(models_dir):
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"))
    before = registry.refresh()
    new_version = store.save(before["mf"].model)
    store.activate("mf", new_version)
    after = registry.refresh()
    assert after["mf"].version == new_version and after["mf"] is not before["mf"]
    assert after["gru4rec"] is before["gru4rec"]
    assert after.generation == before.generation + 1


def test_corrupt_new_version_refused_old_keeps_serving(models_dir):
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"))
    old = registry.refresh()["mf"]
    bad = store.save(old.model)
    weights = models_dir / "mf" / bad / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    store.activate("mf", bad)
    models = registry.refresh()
    assert models["mf"] is old
    assert "truncated" in registry.errors["mf"]


def test_requests_during_swaps_never_fail(models_dir):
    """Readers take one snapshot per request while another thread keeps swapping versions."""
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"))
    first = registry.refresh()
    second = ModelSet({n: registry.load_version(n, first[n].version) for n in first}, first.generation + 1)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                lm = registry.models["mf"]
                items = torch.arange(lm.n_items).unsqueeze(0)
                scores = lm.model.score_candidates(user_batch(lm, lm.items_of(["i1"])), np.array([0]), items)
                assert scores.shape == (1, lm.n_items) and torch.isfinite(scores).all()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(200):
        registry.swap(second if i % 2 else first)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_prepare_for_serving_caches_without_changing_scores(models_dir):
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"))
    served = registry.refresh()["content"]
    plain = LoadedModel("content", served.version, store.load("content", served.version), served.trained_at)
    net = served.model.net
    assert net.encode_catalogue()[0] is net.encode_catalogue()[0]  # cached, not recomputed
    cols = served.items_of(["i1", "i2", "i3"])
    items = torch.arange(served.n_items).unsqueeze(0)
    one, two = (lm.model.score_candidates(user_batch(lm, cols), np.array([0]), items) for lm in (served, plain))
    assert torch.equal(one, two)
    net.train()  # training again drops the cache
    assert net.encode_catalogue()[0] is not net.encode_catalogue()[0]
    net.eval()


@pytest.fixture
def thawed():
    """Leave the collector as the test found it: nothing frozen."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freeze_heap_settles_after_loading_and_frees_swapped_out_versions(models_dir, thawed):
    """With freeze_heap the objects alive after a load are out of the collector's sight, and a version
    swapped out since is still freed, even when it sits in a reference cycle."""
    store = ModelStore(models_dir)
    registry = ModelRegistry(store, torch.device("cpu"), freeze_heap=True)
    registry.refresh()
    assert gc.get_freeze_count() > 0 and gc.get_count()[2] == 0
    old = weakref.ref(registry.models["mf"].model)
    registry.models["mf"].model.extra["self"] = registry.models["mf"]  # a cycle: refcounts alone never free it
    store.activate("mf", store.save(store.load("mf", store.active_version("mf"))))
    since = ["made after the first freeze"]
    registry.refresh()
    assert old() is None  # thawed, collected, and only then the survivors frozen again
    assert not any(o is since for o in gc.get_objects())  # frozen objects are in no generation
    gc.unfreeze()
    registry.refresh()  # nothing changed: no collection, nothing frozen
    assert gc.get_freeze_count() == 0


def test_registry_leaves_the_collector_alone_by_default(models_dir, thawed):
    ModelRegistry(ModelStore(models_dir), torch.device("cpu")).refresh()
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("n", [0, 1, FEW_IDS, FEW_IDS + 1, 500])
def test_positions_equal_get_indexer_for_few_and_many_ids(n: int) -> None:
    index = pd.Index(np.asarray([f"i{k}" for k in range(1000)], dtype=object))
    rng = np.random.default_rng(n)
    ids = [f"i{k}" if k < 1000 else f"unknown{k}" for k in rng.integers(0, 1200, n)]
    expected = index.get_indexer(pd.Index(np.asarray(ids, dtype=object))) if n else np.empty(0, np.int64)
    got = positions(index, ids)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
