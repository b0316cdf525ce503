"""Batching across requests: requests handed over together share one forward pass per model and each
gets its own answer, the same (to float rounding) as when scored alone; a request that breaks a pass
fails only itself; the API hands over the requests that queued while the serving thread was busy."""

import asyncio

import anyio
import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from app.api.batcher import RequestBatcher
from app.serving import items, scoring
from app.serving.batching import drive, run_alone
from app.serving.history import CatalogueCache
from app.serving.service import Filters, RecommendationService
from tests.serving.support import N_USERS, assert_same_ranking


def squares(model, requests):
    """A toy scorer: model * x for each request; 'bad' breaks any pass it is in."""
    if "bad" in requests:
        raise ValueError("bad request")
    return [model * x for x in requests]


def asks(*needs):
    """Steps that ask for each (kind, model, request) in turn and return what they were sent."""
    got = []
    for need in needs:
        got.append((yield need))
    return got


def test_requests_handed_over_together_share_a_pass_per_model_and_kind():
    passes = []
    steps = [asks(("sq", 10, 1), ("sq", 100, 2)), asks(("sq", 10, 3)), asks(("sq", 100, 4), ("sq", 10, 5))]
    out = drive(steps, {"sq": squares}, max_batch=8, observe=lambda model, n: passes.append((model, n)))
    assert out == [[10, 200], [30], [400, 50]]
    # round 1: model 10 for requests 1 and 3, model 100 for 4; round 2: model 100 for 2, model 10 for 5
    assert sorted(passes) == sorted([(10, 2), (100, 1), (100, 1), (10, 1)])


def test_passes_hold_at_most_max_batch_requests():
    passes = []
    out = drive([asks(("sq", 2, x)) for x in range(7)], {"sq": squares}, 3, lambda m, n: passes.append(n))
    assert out == [[2 * x] for x in range(7)] and passes == [3, 3, 1]


def test_a_request_that_breaks_the_pass_fails_only_itself():
    passes = []
    steps = [asks(("sq", 1, x)) for x in (1, 2, "bad", 4)]
    out = drive(steps, {"sq": squares}, 8, lambda m, n: passes.append(n))
    assert out[:2] == [[1], [2]] and out[3] == [4]
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad request"
    assert passes == [1, 1, 1]  # the joint pass failed; each request was then scored alone
    with pytest.raises(ValueError, match="bad request"):
        run_alone(asks(("sq", 1, "bad")), {"sq": squares})


def test_a_request_may_handle_the_error_of_its_pass():
    def careful():
        try:
            return (yield "sq", 1, "bad")
        except ValueError:
            return "fell back"

    assert drive([careful(), asks(("sq", 1, 3))], {"sq": squares}, 8) == ["fell back", [3]]


def test_errors_before_any_pass_are_that_requests_result():
    def refuses():
        raise LookupError("unknown model")
        yield  # a generator

    out = drive([refuses(), asks(("sq", 1, 2))], {"sq": squares}, 8)
    assert isinstance(out[0], LookupError) and out[1] == [2]


def test_the_api_hands_the_requests_queued_meanwhile_to_one_thread_hop():
    """Requests that arrive while a lane is busy wait on the event loop and go together; a client that
    went away is not computed; each caller gets its own result or error."""
    hops = []

    def run_many(steps):
        hops.append(len(steps))
        return drive(steps, {"sq": squares}, 8)

    async def main():
        batcher = RequestBatcher(run_many, anyio.CapacityLimiter(1), max_batch=4)
        calls = [asyncio.create_task(batcher.submit(lambda x=x: asks(("sq", 3, x)))) for x in (1, 2, "bad", 4, 5, 6)]
        await asyncio.sleep(0)  # the first is in its thread hop, the other five queued behind it
        calls[4].cancel()  # that client went away
        return await asyncio.gather(*calls, return_exceptions=True)

    hop_count = REGISTRY.get_sample_value("deeprec_serving_batch_size_count") or 0.0
    hop_sum = REGISTRY.get_sample_value("deeprec_serving_batch_size_sum") or 0.0
    out = asyncio.run(main())
    assert REGISTRY.get_sample_value("deeprec_serving_batch_size_count") - hop_count == 3
    assert REGISTRY.get_sample_value("deeprec_serving_batch_size_sum") - hop_sum == 5
    assert out[0] == [3] and out[1] == [6] and out[3] == [12] and out[5] == [18]
    assert isinstance(out[2], ValueError) and isinstance(out[4], asyncio.CancelledError)
    # the first found the lane free and went alone; the five queued behind it went at most 4 a hop, and
    # the cancelled one was never computed
    assert hops == [1, 3, 1]

    async def alone():
        batcher = RequestBatcher(run_many, anyio.CapacityLimiter(1), max_batch=4)
        return [await batcher.submit(lambda x=x: asks(("sq", 1, x))) for x in (7, 8)]

    hops.clear()
    assert asyncio.run(alone()) == [[7], [8]] and hops == [1, 1]  # one at a time: no waiting for company


def test_distinct_rows_splits_repeated_rows_into_later_passes():
    rows = np.array([3, 1, 3, 2, 3, 1])
    parts = scoring.distinct_rows(rows)
    assert [p.tolist() for p in parts] == [[0, 1, 3], [2, 5], [4]]
    assert [p.tolist() for p in scoring.distinct_rows(np.array([5, 4]))] == [[0, 1]]


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


def batch_sizes(model: str) -> tuple[float, float]:
    """(passes, requests) of ``model`` in the batch-size metric so far."""
    labels = {"model": model}
    count = REGISTRY.get_sample_value("deeprec_score_batch_size_count", labels) or 0.0
    return count, REGISTRY.get_sample_value("deeprec_score_batch_size_sum", labels) or 0.0


@pytest.mark.parametrize("kind", ["recommend", "next_items", "predict"])
def test_requests_run_together_share_a_pass_and_each_gets_its_own_answer(loaded, kind):
    registry, sessions = loaded
    batched = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), batch_size=32)
    users = [f"u{u}" for u in range(0, N_USERS, 3)]
    model = "gru4rec" if kind == "next_items" else "hybrid"

    def steps(user):
        if kind == "recommend":
            return batched.recommend_steps(user, filters=Filters(n=8))
        if kind == "next_items":
            return batched.next_items_steps(user, model="gru4rec", filters=Filters(n=8))
        return items.predict_steps(batched, user, ["i1", "i2", "i5"])

    before = batch_sizes(model)
    together = batched.run_many([steps(u) for u in users])
    after = batch_sizes(model)
    assert (after[0] - before[0], after[1] - before[1]) == (1, len(users))  # one pass for all of them
    for user, out in zip(users, together, strict=True):
        assert not isinstance(out, BaseException), out
        alone = batched.run(steps(user))  # the same request on its own
        if kind == "predict":
            assert {k: v for k, v in out.items() if k != "predictions"} == {
                k: v for k, v in alone.items() if k != "predictions"
            }
            scores = [p.score for p in alone["predictions"]]
            assert [p.score for p in out["predictions"]] == pytest.approx(scores, abs=1e-5)
            continue
        same_list(out, alone)
        if kind == "recommend":
            assert {i.reason for i in out.items} <= {"mf", "gru4rec", "content", "popularity"}


def test_a_bad_request_among_others_gets_its_own_error(loaded):
    registry, sessions = loaded
    svc = RecommendationService(registry, sessions, CatalogueCache(sessions, ttl_s=0.0), batch_size=32)
    out = svc.run_many([svc.recommend_steps("u1"), svc.recommend_steps("u2", model="nope"), svc.recommend_steps("u3")])
    assert out[0].items and out[2].items
    assert type(out[1]).__name__ == "UnknownModel"
