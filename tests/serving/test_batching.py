"""Micro-batching: concurrent requests share one forward pass and each gets its own answer, the same
(to float rounding) as when scored alone; a request that breaks a pass fails only itself."""

import threading
import time

import numpy as np
import pytest
import torch

from app.db.session import make_sessionmaker
from app.recsys.store import ModelStore
from app.serving import scoring
from app.serving.batching import MicroBatcher
from app.serving.history import CatalogueCache
from app.serving.registry import ModelRegistry
from app.serving.service import Filters, RecommendationService
from tests.serving.support import N_USERS, assert_same_ranking, seed_database
from tests.serving.test_cache import add_hybrid


def run_threads(fn, args) -> list:
    """fn(arg) in one thread per arg, all released at once; their results in arg order (errors re-raised)."""
    out: list = [None] * len(args)
    start = threading.Barrier(len(args))

    def work(i, arg):
        start.wait()
        try:
            out[i] = fn(arg)
        except BaseException as e:  # noqa: BLE001
            out[i] = e

    threads = [threading.Thread(target=work, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


class Gate:
    """A batch function that holds its first pass until ``queued`` requests wait behind it."""

    def __init__(self, fn, queued: int) -> None:
        self.fn, self.queued, self.sizes, self.batcher = fn, queued, [], None

    def __call__(self, requests):
        if not self.sizes:
            wait_for(lambda: len(self.batcher._pending) >= self.queued)
        self.sizes.append(len(requests))
        return self.fn(requests)


def test_alone_each_request_is_its_own_pass():
    seen = []
    batcher = MicroBatcher(lambda xs: [x * 10 for x in xs], max_batch=8, observe=seen.append)
    assert [batcher(i) for i in range(3)] == [0, 10, 20]
    assert seen == [1, 1, 1] and batcher.batches == 3 and batcher.requests == 3


def test_requests_queued_behind_a_pass_share_the_next_one_up_to_the_cap():
    gate = Gate(lambda xs: [x * x for x in xs], queued=6)
    gate.batcher = batcher = MicroBatcher(gate, max_batch=4)
    out = run_threads(batcher, list(range(7)))
    assert out == [x * x for x in range(7)]  # every caller gets the answer to its own request
    assert gate.sizes == [1, 4, 2]  # the first alone, then the 6 waiting ones in passes of at most 4


def test_a_request_that_breaks_the_pass_fails_only_itself():
    def square(xs):
        if "bad" in xs:
            raise ValueError("bad request")
        return [x * x for x in xs]

    gate = Gate(square, queued=4)
    gate.batcher = batcher = MicroBatcher(gate, max_batch=8)
    out = run_threads(batcher, [1, 2, "bad", 3, 4])
    assert [o for o in out if not isinstance(o, Exception)] == [1, 4, 9, 16]
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad request"
    assert gate.sizes[0] == 1 and 4 in gate.sizes  # the joint pass, then each of its requests alone


def test_distinct_rows_splits_repeated_rows_into_later_passes():
    rows = np.array([3, 1, 3, 2, 3, 1])
    parts = scoring.distinct_rows(rows)
    assert [p.tolist() for p in parts] == [[0, 1, 3], [2, 5], [4]]
    assert [p.tolist() for p in scoring.distinct_rows(np.array([5, 4]))] == [[0, 1]]


@pytest.fixture
def loaded(models_dir, engine, session):
    """The registry's loaded models (the stored ones and a hybrid over them), one torch thread."""
    seed_database(session)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    add_hybrid(ModelStore(models_dir))
    registry = ModelRegistry(ModelStore(models_dir), torch.device("cpu"))
    registry.refresh()
    yield registry, make_sessionmaker(engine)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["hybrid", "mf", "content"])
def test_batch_rows_equal_users_scored_alone(loaded, name):
    """Each request of a batch gets the scores (and an ensemble's reasons) it gets alone, also for a
    user who appears twice with different histories and for two users the model never saw."""
    registry, _ = loaded
    lm = registry.models[name]
    rng = np.random.default_rng(0)
    # -1: a user the model never saw, which serving asks only of models that read the history
    users = [0, 5, 5, -1, 9, -1] if scoring.history_aware(lm.model) else [0, 5, 5, 2, 9, 3]
    requests = [scoring.user_request(lm, u, rng.permutation(lm.n_items)[: 3 + 2 * k]) for k, u in enumerate(users)]
    batch = scoring.score_users(lm, requests)
    for request, (scores, explained) in zip(requests, batch, strict=True):
        alone, alone_explained = scoring.score_users(lm, [request])[0]
        assert torch.allclose(scores, alone, atol=1e-5), name
        if name == "hybrid":
            assert explained is not None and np.array_equal(explained[1], alone_explained[1])
        else:
            assert explained is None
    if scoring.history_aware(lm.model):  # the same user with two histories gets two answers
        assert not torch.allclose(batch[1][0], batch[2][0])


def test_hybrid_reasons_from_a_batch_name_the_members_that_explain_alone(loaded):
    registry, _ = loaded
    lm = registry.models["hybrid"]
    cols = np.arange(6)
    data, row = scoring.history_data(lm, 3, cols)
    top = torch.topk(lm.model.score_history(data, np.array([row]))[0], 5).indices  # sets the per-thread state
    expected = lm.model.explain(top)
    (_, (names, codes)), *_ = scoring.score_users(lm, [scoring.user_request(lm, 3, cols)])
    assert names[codes[top.numpy()]].tolist() == expected


def test_sequences_batch_equals_each_alone(loaded):
    registry, _ = loaded
    lm = registry.models["gru4rec"]
    seqs = [np.array([1, 2, 3]), np.array([], dtype=np.int64), np.array([7]), np.arange(1, 25)]
    requests = [scoring.sequence_request(lm, s) for s in seqs]
    batch = scoring.score_sequences(lm, requests)
    for request, (scores, known) in zip(requests, batch, strict=True):
        alone, known_alone = scoring.score_sequences(lm, [request])[0]
        assert known == known_alone == request.size
        if known:  # with no known item the scores are not used (the service falls back)
            assert torch.allclose(scores, alone, atol=1e-5)


def same_list(a, b) -> None:
    """Equal lists, except that items whose scores tie to float rounding may trade places."""
    assert (a.model, a.version, a.strategy, a.detail) == (b.model, b.version, b.strategy, b.detail)
    assert_same_ranking([(i.item_id, i.score) for i in a.items], [(i.item_id, i.score) for i in b.items])
    by_id = {i.item_id: i.reason for i in b.items}
    assert all(by_id.get(i.item_id, i.reason) == i.reason for i in a.items)


@pytest.mark.parametrize("kind", ["recommend", "next_items"])
def test_concurrent_requests_are_batched_and_each_gets_its_own_list(loaded, kind, monkeypatch):
    registry, sessions = loaded
    batched = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), batch_size=32)
    alone = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), batch_size=1)
    users = [f"u{u}" for u in range(0, N_USERS, 3)]
    model, fn_kind = ("hybrid", "user") if kind == "recommend" else ("gru4rec", "sequence")
    lm = registry.models[model]
    fn = scoring.score_users if fn_kind == "user" else scoring.score_sequences
    gate = Gate(lambda requests: fn(lm, requests), queued=len(users) - 1)
    gate.batcher = batched._batcher(lm, fn_kind, lambda _lm, requests: gate(requests))

    def ask(service, user):
        if kind == "recommend":
            return service.recommend(user, filters=Filters(n=8))
        return service.next_items(user, model="gru4rec", filters=Filters(n=8))

    together = run_threads(lambda u: ask(batched, u), users)
    assert gate.sizes == [1, len(users) - 1]  # the first request alone, the rest in one pass
    for user, out in zip(users, together, strict=True):
        assert not isinstance(out, BaseException), out
        same_list(out, ask(alone, user))
    if kind == "recommend":
        assert {i.reason for out in together for i in out.items} <= {"mf", "gru4rec", "content", "popularity"}
