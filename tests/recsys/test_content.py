"""Content model: brand-new and feature-only items are ranked by taste; unseen users; rating head."""

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import TrainConfig
from app.recsys.models.content import Content, ContentConfig
from app.recsys.splits import leave_one_out
from app.recsys.training import rating_errors
from tests.recsys.synthetic import CATEGORIES, items_frame, taste_data, taste_frame

CFG = TrainConfig(epochs=15, batch_size=128, lr=5e-3, patience=100, seed=0)
N_KNOWN = 60  # items with interactions; the catalogue adds 10 feature-only items after them


def favourites(data: InteractionData) -> np.ndarray:
    """[U] index of each user's favourite category (taste_frame: user k likes category k % 5)."""
    return np.array([int(u[1:]) % len(CATEGORIES) for u in data.user_ids])


def item_categories(data: InteractionData) -> np.ndarray:
    """[I] category of each catalogue item (one-hot columns come first, in CATEGORIES order)."""
    assert data.feature_schema.categories == CATEGORIES
    return data.item_features[:, : len(CATEGORIES)].argmax(1)


def feature_only(data: InteractionData) -> np.ndarray:
    """Catalogue indices of the items that have features but no interactions at all."""
    return data.item_index([f"i{j}" for j in range(N_KNOWN, N_KNOWN + 10)])


def new_items(n_per_cat: int = 2) -> pd.DataFrame:
    cats = np.repeat(np.arange(len(CATEGORIES)), n_per_cat)
    return pd.DataFrame(
        {
            "item_id": [f"new{j}" for j in range(len(cats))],
            "title": [f"{CATEGORIES[c]} movie new {j}" for j, c in enumerate(cats)],
            "categories": [[CATEGORIES[c]] for c in cats],
            "attributes": [{"year": 1990 + j} for j in range(len(cats))],
        }
    )


@pytest.fixture(scope="module")
def split():
    data = InteractionData.from_frames(taste_frame(n_items=N_KNOWN), items_frame(N_KNOWN + 10))
    return leave_one_out(data)


@pytest.fixture(scope="module")
def model(split):
    m = Content()
    m.fit(split.train, split.valid, CFG)
    return m


def test_brand_new_items_matching_taste_rank_first(model, split):
    frame = new_items()
    feats = model.feature_schema.encode(frame)  # the service's encoding of items added after training
    users = np.arange(split.train.n_users)
    scores = model.score_new_items(split.train.select(users), users, feats)  # [U, 10]
    assert scores.shape == (len(users), len(frame)) and torch.isfinite(scores).all()
    item_cat = np.repeat(np.arange(len(CATEGORIES)), 2)
    match = torch.as_tensor(item_cat[None, :] == favourites(split.train)[:, None])  # [U, 10]
    worst_match = scores.masked_fill(~match, float("inf")).min(1).values
    best_other = scores.masked_fill(match, float("-inf")).max(1).values
    assert (worst_match > best_other).float().mean() >= 0.9
    # They also beat the catalogue's interacted-with items of other categories for most users.
    known = np.setdiff1d(np.arange(split.train.n_items), feature_only(split.train))
    scores_known = model.score_history(split.train, users)[:, known]
    cat_known = item_categories(split.train)[known]
    other = torch.as_tensor(cat_known[None, :] != favourites(split.train)[:, None])
    median_other = scores_known.masked_fill(~other, float("nan")).nanmedian(1).values
    assert (worst_match > median_other).float().mean() >= 0.9


def test_feature_only_catalogue_items_are_recommended_by_taste(model, split):
    users = np.arange(split.train.n_users)
    only = feature_only(split.train)
    assert (split.train.union(split.valid).union(split.test).item_counts()[only] == 0).all()
    scores = model.score_history(split.train, users)[:, only]  # [U, 10] items with features only
    cat = item_categories(split.train)[only]
    match = torch.as_tensor(cat[None, :] == favourites(split.train)[:, None])  # [U, 10]
    # Pairwise: a taste item outscores a non-taste item (AUC over every user's pairs).
    pairs = match.unsqueeze(2) & ~match.unsqueeze(1)  # [U, 10, 10]
    wins = (scores.unsqueeze(2) > scores.unsqueeze(1)) & pairs
    assert wins.sum() / pairs.sum() >= 0.9
    top = scores.argmax(1).numpy()
    assert (cat[top] == favourites(split.train)).mean() >= 0.8


def test_unseen_users_served_from_history_profile(model, split):
    """Five users absent from training (rows past the last one), each with 6 items of one category."""
    cats = item_categories(split.train)
    known = np.setdiff1d(np.arange(split.train.n_items), feature_only(split.train))
    items = np.stack([known[cats[known] == c][:6] for c in range(len(CATEGORIES))])  # [5, 6]
    rows = split.train.n_users + np.arange(len(CATEGORIES))
    history = InteractionData(
        user_ids=np.concatenate([split.train.user_ids, [f"newcomer{c}" for c in range(len(CATEGORIES))]]),
        item_ids=split.train.item_ids,
        users=np.repeat(rows, items.shape[1]),
        items=items.ravel(),
        ratings=np.full(items.size, np.nan, dtype=np.float32),
        ts=np.tile(np.arange(items.shape[1]), len(CATEGORIES)),
        item_features=np.zeros((split.train.n_items, 0), dtype=np.float32),
    )
    scores = model.score_history(history, rows)  # [5, I]
    unseen = ~history.seen_mask(rows)
    taste = torch.as_tensor(cats[None, :] == np.arange(len(CATEGORIES))[:, None])  # [5, I] the profile's category
    pairs = (taste & unseen).unsqueeze(2) & (~taste & unseen).unsqueeze(1)  # [5, I, I] (taste item, other item)
    wins = (scores.unsqueeze(2) > scores.unsqueeze(1)) & pairs
    assert wins.sum() / pairs.sum() >= 0.8  # AUC over every newcomer's pairs; 0.85-1.0 over seeds 0-9


def test_item_embeddings_and_encoder_shapes(model, split):
    emb = model.item_embeddings()
    assert emb.shape == (split.train.n_items, model.config.dim)
    enc = model.encode_items(model.feature_schema.encode(new_items(1)))
    assert enc.shape == (len(CATEGORIES), model.config.dim) and torch.isfinite(enc).all()


@pytest.mark.parametrize("sparse_above", [20_000, 0])  # 0: sparse tables, only the touched items encoded
def test_rating_head_beats_global_mean_and_rates_new_items(split, tmp_path, sparse_above):
    m = Content(ContentConfig(dim=16))
    cfg = TrainConfig(epochs=30, batch_size=128, lr=5e-3, objective="rating", seed=0, sparse_above=sparse_above)
    m.fit(split.train, split.valid, cfg)
    assert m.supports_rating and "valid_rmse" in m.metrics
    assert m.extra["sparse"] == (sparse_above == 0)
    err = rating_errors(m, split.test)["rmse"]
    mean = float(np.nanmean(split.train.ratings))
    baseline = float(np.sqrt(np.nanmean((split.test.ratings - mean) ** 2)))
    assert err < 0.8 * baseline
    # Feature-only catalogue items get ratings on the data's scale, high for the favourite category.
    users = torch.arange(split.train.n_users)
    fav = favourites(split.train)
    only = feature_only(split.train)
    by_cat = only[np.argsort(item_categories(split.train)[only])][::2]  # one feature-only item per category
    taste_item = torch.as_tensor(by_cat[fav])
    other_item = torch.as_tensor(by_cat[(fav + 1) % len(CATEGORIES)])
    liked, disliked = m.predict_ratings(users, taste_item), m.predict_ratings(users, other_item)
    assert (liked > disliked).float().mean() >= 0.9
    assert 0.0 < float(liked.mean()) < 6.0
    new = m.score_new_items(split.train.select(users.numpy()), users.numpy(), m.feature_schema.encode(new_items(1)))
    assert (new.argmax(1).numpy() == fav).mean() >= 0.9
    m.save(tmp_path / "content")
    loaded = Content.load(tmp_path / "content")
    assert torch.equal(loaded.predict_ratings(users, taste_item), liked)


def test_sampled_softmax_learns_taste_without_encoding_the_catalogue(split, monkeypatch):
    """Above sampled_above items a step encodes only the items it touches (never the whole catalogue), and
    the model still ranks each user's taste first, on items seen and on feature-only items."""
    from app.recsys.models.content_net import ContentNet

    def whole_catalogue(self):
        if self.training:
            raise AssertionError("a sampled step encoded the whole catalogue")
        return original(self)

    original = ContentNet.encode_catalogue
    monkeypatch.setattr(ContentNet, "encode_catalogue", whole_catalogue)
    m = Content(ContentConfig(sampled_above=10, num_sampled=16))
    m.fit(split.train, split.valid, CFG)
    assert m.extra["loss"] == "sampled-softmax"
    users = np.arange(split.train.n_users)
    scores = m.score_history(split.train, users)  # [U, I]
    match = torch.as_tensor(item_categories(split.train)[None, :] == favourites(split.train)[:, None])  # [U, I]
    pairs = match.unsqueeze(2) & ~match.unsqueeze(1)
    wins = (scores.unsqueeze(2) > scores.unsqueeze(1)) & pairs
    assert wins.sum() / pairs.sum() >= 0.8  # AUC of taste over every user's pairs


def test_windows_built_per_batch_equal_the_precomputed_ones():
    from app.recsys.models.content_net import CausalWindows, causal_windows

    data = taste_data(n_users=30, per_user=17)
    full = causal_windows(data, 8)
    pos = torch.randperm(data.n_interactions)[:100]
    assert torch.equal(CausalWindows(data, 8, "cpu")(pos), torch.as_tensor(full)[pos])


def test_validation_and_evaluation_encode_the_catalogue_once():
    split = leave_one_out(taste_data())
    model = Content()
    calls = []
    model.fit(split.train, split.valid, TrainConfig(epochs=2, batch_size=256, lr=2e-3, eval_users=0))
    net = model._net()
    net.encoder.register_forward_hook(lambda *a: calls.append(1))
    frozen = net.encode_catalogue()
    users = np.unique(split.valid.users)
    from app.recsys.training import ranking_score

    ranking_score(model, split.train, split.valid, batch_size=8)  # several batches of users
    assert not calls  # the kept weights were encoded when fit ended
    net.__dict__["_frozen"] = None
    again = net.encode_catalogue()
    assert calls and torch.allclose(again[0], frozen[0]) and len(users) > 8
