"""The one trainer: every model trains through it, and it owns epochs, early stopping and validation."""

import dataclasses

import numpy as np
import pytest
import torch

from app.recsys.models import get_model_class, model_names
from app.recsys.models.base import Batches, FitReport, Recommender, TrainConfig
from app.recsys.models.mf import MF
from app.recsys.splits import leave_one_out
from app.recsys.training import validation_score
from tests.recsys.synthetic import taste_data

CFG = TrainConfig(epochs=5, batch_size=256, lr=5e-3, patience=2, seed=0)


@pytest.fixture(scope="module")
def split():
    return leave_one_out(taste_data())


@pytest.mark.parametrize("name", model_names())
def test_no_model_has_its_own_loop(name):
    cls = get_model_class(name)
    assert cls.fit is Recommender.fit, f"{name} overrides fit: give the trainer its loss (start_fit) instead"
    if cls.closed_form:
        assert cls.solve is not Recommender.solve and cls.start_fit is Recommender.start_fit
    else:
        assert cls.start_fit is not Recommender.start_fit and cls.solve is Recommender.solve


def test_closed_form_models_are_declared():
    closed = {n for n in model_names() if get_model_class(n).closed_form}
    assert closed == {"popularity", "ease", "hybrid-rating"}


class Scripted(MF):
    """MF whose validation metric follows a script, to watch the trainer's early stopping."""

    name = "mf"

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.epoch_weights = []

    def validate(self, train, valid, cfg):
        self.epoch_weights.append(self._net().item.weight.detach().clone())
        return self.script.pop(0)


def test_early_stopping_keeps_the_best_epochs_weights(split):
    model = Scripted([0.1, 0.3, 0.2, 0.25, 0.9])  # best at epoch 2; patience 2 stops after epoch 4
    report = model.fit(split.train, split.valid, CFG)
    assert report.epochs_run == 4 and report.best_epoch == 2 and report.best_metric == pytest.approx(0.3)
    assert [h["ndcg@10"] for h in report.history] == [0.1, 0.3, 0.2, 0.25]
    assert torch.equal(model._net().item.weight, model.epoch_weights[1])  # epoch 2's weights are back
    assert model.metrics["valid_ndcg@10"] == pytest.approx(0.3)


def test_validation_is_the_ranking_metric_of_the_kept_weights(split):
    model = MF()
    report = model.fit(split.train, split.valid, CFG)
    direct = validation_score(model, split.train, split.valid, CFG)["ndcg@10"]
    assert report.best_metric == pytest.approx(direct)


def test_without_validation_the_last_epoch_stands(split):
    model = MF()
    report = model.fit(split.train, None, dataclasses.replace(CFG, epochs=3))
    assert report.epochs_run == 3 and report.best_epoch == 3 and report.best_metric is None
    assert "valid_ndcg@10" not in model.metrics


def test_loss_is_the_models_and_each_epoch_draws_fresh_negatives(split):
    seen_epochs, batch_sizes = [], []

    class Counting(MF):
        def start_fit(self, train, valid, cfg):
            inner = super().start_fit(train, valid, cfg)

            def new_epoch(epoch):
                seen_epochs.append(epoch)
                inner.new_epoch(epoch)

            def loss(idx):
                batch_sizes.append(len(idx))
                return inner.loss(idx)

            return Batches(inner.n, loss, new_epoch=new_epoch)

    Counting().fit(split.train, None, dataclasses.replace(CFG, epochs=2))
    assert seen_epochs == [1, 2]
    n = split.train.n_interactions
    assert sum(batch_sizes) == 2 * n and max(batch_sizes) == CFG.batch_size


def test_on_epoch_and_time_limit(split):
    infos = []
    report = MF().fit(split.train, split.valid, dataclasses.replace(CFG, epochs=50, max_seconds=1e-9), infos.append)
    assert report.epochs_run == 1 and [i.epoch for i in infos] == [1]


def test_closed_form_fit_is_one_validated_pass(split):
    model = get_model_class("ease")()
    infos = []
    report = model.fit(split.train, split.valid, CFG, infos.append)
    assert isinstance(report, FitReport) and report.epochs_run == 1 and len(infos) == 1
    assert report.best_metric == pytest.approx(validation_score(model, split.train, split.valid, CFG)["ndcg@10"])


def test_nothing_to_learn_keeps_the_initial_weights(split):
    class Idle(MF):
        def start_fit(self, train, valid, cfg):
            super().start_fit(train, valid, cfg)
            return Batches.nothing()

    model = Idle()
    report = model.fit(split.train, split.valid, CFG)
    assert report.epochs_run == 0 and np.isclose(float(model._net().item.weight.detach().std()), 0.01, rtol=0.2)


def test_a_diverging_loss_stops_the_fit(split):
    class Diverging(MF):
        def start_fit(self, train, valid, cfg):
            inner = super().start_fit(train, valid, cfg)
            return Batches(inner.n, lambda idx: inner.loss(idx) * float("nan"), new_epoch=inner.new_epoch)

    with pytest.raises(FloatingPointError, match="loss became nan"):
        Diverging().fit(split.train, None, CFG)
