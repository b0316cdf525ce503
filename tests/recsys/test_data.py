import numpy as np
import pandas as pd
import pytest

from app.recsys.data import InteractionData
from app.recsys.sampling import NegativeSampler
from app.recsys.splits import file_split, leave_one_out, ratio_split, temporal_split
from tests.recsys.synthetic import items_frame, taste_data, taste_frame


def small() -> InteractionData:
    df = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "c", "a"],
            "item_id": ["x", "y", "z", "y", "x", "z", "x"],
            "value": [5, 4, 3, 2, 1, 5, 4],
            "ts": [3, 1, 2, 5, 4, 9, 10],
        }
    )
    return InteractionData.from_frames(df)


def test_ids_csr_and_time_order():
    d = small()
    assert list(d.user_ids) == ["a", "b", "c"]
    assert list(d.item_ids) == ["x", "y", "z"]
    # (a, x) was seen twice: the later event (ts 10, rating 4) is kept.
    assert d.n_interactions == 6
    assert list(d.indptr) == [0, 3, 5, 6]
    assert list(d.items[:3]) == [1, 2, 0]  # a: y@1, z@2, x@10
    assert list(d.ratings[:3]) == [4, 3, 4]
    assert d.sequences(2).tolist() == [[3, 1], [1, 2], [0, 3]]
    assert d.seen_mask(np.array([1, 2])).tolist() == [[True, True, False], [False, False, True]]
    assert list(d.user_index(["c", "zz"])) == [2, -1]


def test_catalogue_includes_items_with_features_only():
    d = InteractionData.from_frames(taste_frame(n_users=10, n_items=60), items_frame(70))
    assert d.n_items == 70
    assert d.item_features.shape[0] == 70
    assert d.item_counts()[d.item_index(["i65"])[0]] == 0
    assert d.item_features[d.item_index(["i65"])[0]].any()


def test_feature_schema_encodes_categories_numeric_and_text():
    items = items_frame(10)
    d = InteractionData.from_frames(taste_frame(n_users=5, n_items=10, per_user=4), items, text_buckets=16)
    schema = d.feature_schema
    assert schema.categories == sorted({c[0] for c in items["categories"]})
    assert schema.numeric == ["year"]
    f = d.item_features
    assert f.shape == (10, schema.dim)
    assert np.allclose(f[:, : len(schema.categories)].sum(1), 1.0)
    year = f[:, len(schema.categories)]
    assert abs(year.mean()) < 1e-5
    assert np.allclose(np.linalg.norm(f[:, -16:], axis=1), 1.0, atol=1e-5)


def test_leave_one_out_takes_last_two_by_time():
    d = small()
    s = leave_one_out(d)
    assert s.test.n_interactions == 1 and s.valid.n_interactions == 1  # only a has >= 3 events
    assert d.item_ids[s.test.items[0]] == "x" and d.item_ids[s.valid.items[0]] == "z"
    assert s.train.n_interactions + 2 == d.n_interactions


@pytest.mark.parametrize("make", [lambda d: temporal_split(d), lambda d: ratio_split(d, seed=3)])
def test_splits_partition_and_are_deterministic(make):
    d = taste_data()
    a, b = make(d), make(d)
    total = a.train.n_interactions + a.valid.n_interactions + a.test.n_interactions
    assert total == d.n_interactions
    assert np.array_equal(a.test.items, b.test.items) and np.array_equal(a.test.users, b.test.users)


def test_temporal_split_is_after_train():
    s = temporal_split(taste_data())
    assert s.train.ts.max() <= s.valid.ts.min() <= s.test.ts.min()


def test_file_split_keeps_file_membership():
    train = taste_frame(n_users=10, per_user=10, seed=1)
    test = taste_frame(n_users=10, per_user=10, seed=2).assign(ts=lambda f: f["ts"] + 10**6)
    test = test.drop_duplicates(["user_id", "item_id"])
    s = file_split(train, test, valid_frac=0.0)
    assert s.test.n_interactions == len(test)
    assert s.train.n_interactions == len(train)
    assert s.test.ts.min() > s.train.ts.max()


def test_sampler_never_returns_positive():
    d = taste_data()
    sampler = NegativeSampler(d, seed=0)
    neg = sampler.sample(d.users, k=8)
    assert neg.shape == (d.n_interactions, 8)
    assert not sampler.is_positive(np.repeat(d.users, 8), neg.ravel()).any()


def test_sampler_dense_user_edge_cases():
    n_items = 50
    rows = [("dense", f"i{j}", 1.0, j) for j in range(n_items - 1)]  # all but i49
    rows += [("full", f"i{j}", 1.0, j) for j in range(n_items)]  # the whole catalogue
    d = InteractionData.from_frames(pd.DataFrame(rows, columns=["user_id", "item_id", "value", "ts"]))
    sampler = NegativeSampler(d, seed=0)
    dense, full = d.user_index(["dense", "full"])
    neg = sampler.sample(np.array([dense] * 30), k=5)
    assert (d.item_ids[neg.ravel()] == "i49").all()
    assert (sampler.sample(np.array([full]), k=3) == -1).all()
