"""One contract for every registered model: fits, scores finite, respects exclusions, round-trips."""

import numpy as np
import pytest
import torch

from app.recsys.models import get_model_class, model_names
from app.recsys.models.base import TrainConfig, top_k
from app.recsys.splits import leave_one_out
from tests.recsys.synthetic import taste_data

CFG = TrainConfig(epochs=6, batch_size=256, lr=5e-3, patience=100, seed=0)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(taste_data())


@pytest.fixture(scope="module", params=model_names())
def fitted(request, split):
    model = get_model_class(request.param)()
    report = model.fit(split.train, split.valid, CFG)
    return model, report


def _scores(model, history, users):
    return model.score_history(history, users)


def test_fit_reduces_loss(fitted):
    model, report = fitted
    losses = [h["loss"] for h in report.history]
    if len(losses) >= 2:
        assert losses[-1] < losses[0], f"{model.name} loss did not go down: {losses}"
    assert report.epochs_run >= 1


def test_scores_are_finite_with_right_shape(fitted, split):
    model, _ = fitted
    users = np.arange(7)
    scores = _scores(model, split.train, users)
    assert scores.shape == (7, split.train.n_items)
    assert torch.isfinite(scores).all()


def test_excluded_items_never_recommended(fitted, split):
    model, _ = fitted
    users = np.arange(split.train.n_users)
    seen = split.train.seen_mask(users)
    _, idx = top_k(_scores(model, split.train, users), 10, seen)
    picked = torch.zeros_like(seen)
    valid = idx >= 0
    picked[torch.arange(len(users)).unsqueeze(1).expand_as(idx)[valid], idx[valid]] = True
    assert not (picked & seen).any()


def test_save_load_gives_identical_scores(fitted, split, tmp_path):
    model, _ = fitted
    model.save(tmp_path / model.name)
    loaded = get_model_class(model.name).load(tmp_path / model.name, device="cpu")
    users = np.arange(split.train.n_users)
    assert torch.equal(_scores(model, split.train, users), _scores(loaded, split.train, users))
    assert list(loaded.item_ids) == list(model.item_ids)
