"""Rating prediction: MSE on the rating scale with biases, for MF and the NCF family."""

import dataclasses

import numpy as np
import pytest
import torch

from app.recsys.metrics import rmse
from app.recsys.models import get_model_class
from app.recsys.models.base import TrainConfig
from app.recsys.models.neumf import NeuMF, NeuMFConfig
from app.recsys.splits import ratio_split
from app.recsys.training import rating_errors
from tests.recsys.synthetic import taste_data

# Small shapes for a small data set: the defaults are sized for MovieLens.
RATING_MODELS = {
    "mf": {"dim": 8},
    "gmf": {"dim": 8},
    "mlp": {"dim": 8, "layers": (16, 8)},
    "neumf": {"gmf_dim": 8, "mlp_dim": 8, "layers": (16, 8)},
}
CFG = TrainConfig(epochs=30, batch_size=128, lr=2e-2, patience=100, seed=0, objective="rating")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return ratio_split(taste_data(n_users=150, n_items=60, per_user=30), valid_frac=0.1, test_frac=0.2, seed=0)


@pytest.fixture(scope="module", params=list(RATING_MODELS))
def fitted(request, split):
    cls = get_model_class(request.param)
    model = cls(cls.config_cls(**RATING_MODELS[request.param]))
    report = model.fit(split.train, split.valid, CFG)
    return model, report


def _pairs(data):
    rated = data.has_ratings()
    users = torch.as_tensor(data.users[rated])
    items = torch.as_tensor(data.items[rated])
    return users, items, torch.as_tensor(data.ratings[rated])


def test_beats_global_mean_on_held_out_ratings(fitted, split):
    model, _ = fitted
    users, items, truth = _pairs(split.test)
    mean = float(np.nanmean(split.train.ratings))
    baseline = rmse(torch.full_like(truth, mean), truth)
    learned = rmse(model.predict_ratings(users, items), truth)
    assert learned < 0.75 * baseline, f"{model.name}: RMSE {learned:.3f} vs global mean {baseline:.3f}"


def test_predictions_are_on_the_rating_scale(fitted, split):
    model, _ = fitted
    lo, hi = float(np.nanmin(split.train.ratings)), float(np.nanmax(split.train.ratings))
    users = torch.arange(split.train.n_users)
    scores = model.score_users(users)  # [U, I] predicted ratings, servable as scores
    assert scores.shape == (split.train.n_users, split.train.n_items)
    assert scores.min() >= lo and scores.max() <= hi
    assert scores.max() - scores.min() > 0.5 * (hi - lo)  # a real spread, not a constant
    # The full-catalogue scores are the same numbers as the pairwise predictions.
    u, i, _ = _pairs(split.test)
    assert torch.allclose(scores[u, i], model.predict_ratings(u, i), atol=1e-5)


def test_early_stopping_minimises_validation_rmse(fitted):
    _, report = fitted
    assert report.metric_name == "rmse"
    assert report.best_metric == min(h["rmse"] for h in report.history)


def test_metrics_stored_and_survive_save_load(fitted, split, tmp_path):
    model, report = fitted
    assert set(model.metrics) >= {"valid_rmse", "valid_mae"}
    assert model.metrics["valid_rmse"] == pytest.approx(report.best_metric)
    errors = rating_errors(model, split.valid)
    assert model.metrics == pytest.approx(model.metrics | {f"valid_{k}": v for k, v in errors.items()})
    model.save(tmp_path / model.name)
    loaded = get_model_class(model.name).load(tmp_path / model.name)
    users, items, _ = _pairs(split.test)
    assert torch.equal(loaded.predict_ratings(users, items), model.predict_ratings(users, items))
    assert loaded.metrics == model.metrics


def test_implicit_model_refuses_rating_predictions(split):
    model = get_model_class("gmf")()
    model.fit(split.train, None, dataclasses.replace(CFG, objective="implicit", epochs=1))
    with pytest.raises(ValueError, match="implicit"):
        model.predict_ratings(torch.tensor([0]), torch.tensor([0]))


def test_rating_objective_needs_ratings(split):
    implicit = split.train.subset(np.ones(split.train.n_interactions, bool))
    implicit.ratings = np.full(implicit.n_interactions, np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="rating"):
        get_model_class("mf")().fit(implicit, None, CFG)


def test_pretrained_neumf_on_ratings_keeps_scale(split):
    model = NeuMF(NeuMFConfig(gmf_dim=8, mlp_dim=8, layers=(16, 8), pretrain=True))
    model.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=10))
    assert float(model.net.mu) == pytest.approx(float(np.nanmean(split.train.ratings)))
    users, items, truth = _pairs(split.test)
    baseline = rmse(torch.full_like(truth, float(model.net.mu)), truth)
    assert rmse(model.predict_ratings(users, items), truth) < 0.75 * baseline


@pytest.mark.parametrize("name", list(RATING_MODELS))
def test_default_train_configs_name_their_objective(name):
    cls = get_model_class(name)
    assert cls.default_train_config("rating").objective == "rating"
    assert cls.default_train_config().objective == "implicit"


def test_mf_tuned_rating_optimiser_learns(split):
    cfg = dataclasses.replace(get_model_class("mf").default_train_config("rating"), patience=100)
    assert cfg.optimizer == "sgd"
    model = get_model_class("mf")(get_model_class("mf").config_cls(dim=8))
    model.fit(split.train, split.valid, cfg)
    users, items, truth = _pairs(split.test)
    baseline = rmse(torch.full_like(truth, float(np.nanmean(split.train.ratings))), truth)
    assert rmse(model.predict_ratings(users, items), truth) < 0.75 * baseline
