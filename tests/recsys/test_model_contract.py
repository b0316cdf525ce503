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


def test_top_k_never_returns_an_excluded_item_and_marks_short_rows():
    """``top_k`` is what every model's lists go through: checked once on scores that tempt it (the
    excluded items score highest), not once per model."""
    scores = torch.tensor([[9.0, 8.0, 1.0, 2.0, 3.0], [9.0, 8.0, 7.0, 6.0, 5.0]])
    exclude = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    values, idx = top_k(scores, 3, exclude)
    assert idx[0].tolist() == [4, 3, 2] and values[0].tolist() == [3.0, 2.0, 1.0]
    assert idx[1].tolist() == [4, -1, -1]  # one item left: the rest of the row is marked, not filled
    assert top_k(scores, 10)[1].shape == (2, 5)  # k above the catalogue: every item, best first


def test_save_load_gives_identical_scores(fitted, split, tmp_path):
    model, _ = fitted
    model.save(tmp_path / model.name)
    loaded = get_model_class(model.name).load(tmp_path / model.name, device="cpu")
    users = np.arange(split.train.n_users)
    assert torch.equal(_scores(model, split.train, users), _scores(loaded, split.train, users))
    assert list(loaded.item_ids) == list(model.item_ids)
