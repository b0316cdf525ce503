"""Sparse embedding tables (SparseAdam, or SGD when configured) above ``sparse_above`` items: the same first
step as dense Adam, the same steps as dense SGD, the same quality after training, and only the rows a batch
read change."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from app.recsys.models.base import TrainConfig
from app.recsys.models.content import Content, ContentConfig
from app.recsys.models.gmf import GMF
from app.recsys.models.mf import MF, MFConfig
from app.recsys.models.neumf import NeuMF
from app.recsys.splits import leave_one_out, ratio_split
from app.recsys.training import Optimizers, ranking_score, seed_everything, sparsify_embeddings
from tests.recsys.synthetic import taste_data

DENSE = TrainConfig(epochs=1, batch_size=1 << 20, lr=1e-2, num_negatives=4, patience=3, sparse_above=10**9)
SPARSE = replace(DENSE, sparse_above=0)


@pytest.mark.parametrize("make", [lambda: MF(MFConfig(loss="bce")), GMF, NeuMF])
def test_one_step_of_sparse_adam_matches_dense_adam(make):
    """From zero moments Adam does not move a row with a zero gradient, so one full-batch step of dense Adam
    and of SparseAdam move the same elements the same way. (Their sizes differ where eps enters: SparseAdam adds
    it before the bias correction, which matters for gradients near 1e-8. BCE: under BPR the user bias
    cancels out of every pair and Adam turns its rounding noise into full steps.)"""
    split = leave_one_out(taste_data())
    dense, sparse = make(), make()
    dense.fit(split.train, None, DENSE)
    sparse.fit(split.train, None, SPARSE)
    assert not dense.extra["sparse"] and sparse.extra["sparse"]
    seed_everything(DENSE.seed)
    init = make().bind(split.train).state_dict()
    a, b = dense.net.state_dict(), sparse.net.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        da, db = (a[key] - init[key]).flatten(), (b[key] - init[key]).flatten()
        if da.abs().max() == 0:
            assert db.abs().max() == 0, key
            continue
        assert torch.equal(torch.sign(da), torch.sign(db)), key  # the first step is lr * g / (c |g| + eps)


def test_the_sparse_path_trains_to_the_dense_quality():
    split = leave_one_out(taste_data(n_users=150))
    cfg = replace(DENSE, epochs=30, batch_size=256)
    scores = {}
    for name, c in (("dense", cfg), ("sparse", replace(cfg, sparse_above=0))):
        model = MF()
        model.fit(split.train, split.valid, c)
        scores[name] = ranking_score(model, split.train, split.test)["ndcg@10"]
    assert scores["sparse"] == pytest.approx(scores["dense"], abs=0.05), scores
    assert scores["sparse"] > 0.3, scores


def test_sparse_tables_step_only_the_rows_read():
    split = leave_one_out(taste_data())
    model = MF()
    net = model.bind(split.train)
    assert sparsify_embeddings(net, split.train.n_items, SPARSE)
    opt = Optimizers(net, SPARSE)
    assert len(opt.all) == 1  # MF's parameters are all tables: SparseAdam alone
    before = net.item.weight.detach().clone()
    items = torch.tensor([[3, 5]])
    loss = net(torch.tensor([0]), items).sum()
    opt.zero_grad()
    loss.backward()
    assert net.item.weight.grad.is_sparse
    opt.step()
    changed = torch.nonzero((net.item.weight.detach() != before).any(1)).flatten().tolist()
    assert changed == [3, 5]


def test_dense_below_the_threshold_and_with_weight_decay():
    net = MF().bind(leave_one_out(taste_data()).train)
    assert not sparsify_embeddings(net, 60, replace(SPARSE, sparse_above=60))
    assert not sparsify_embeddings(net, 60, replace(SPARSE, optimizer="adamw", weight_decay=0.1))
    assert not any(m.sparse for m in net.modules() if isinstance(m, torch.nn.Embedding))


def test_content_under_the_sampled_softmax_trains_sparse():
    split = leave_one_out(taste_data())
    model = Content(ContentConfig(sampled_above=0, num_sampled=16))
    cfg = replace(Content.default_train_config(), epochs=2, sparse_above=0)
    report = model.fit(split.train, split.valid, cfg)
    assert model.extra["sparse"] and model.extra["loss"] == "sampled-softmax"
    assert np.isfinite(report.history[-1]["loss"])


def test_mf_on_ratings_takes_the_same_sgd_steps_with_sparse_tables():
    """Plain SGD moves no row whose gradient is zero, so MF's rating objective (SGD) trains the same weights
    with sparse tables, where each step costs the rows a batch read."""
    split = ratio_split(taste_data(n_users=150, n_items=60, per_user=30), valid_frac=0.1, test_frac=0.2, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.5, optimizer="sgd", patience=100, objective="rating",
                      sparse_above=10**9)  # fmt: skip
    dense, sparse = MF(MFConfig(dim=8)), MF(MFConfig(dim=8))
    dense.fit(split.train, split.valid, cfg)
    sparse.fit(split.train, split.valid, replace(cfg, sparse_above=0))
    assert not dense.extra["sparse"] and sparse.extra["sparse"]
    a, b = dense.net.state_dict(), sparse.net.state_dict()
    assert dense.net.item.weight.abs().sum() > 0
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    assert sparse.metrics["valid_rmse"] == pytest.approx(dense.metrics["valid_rmse"], rel=1e-4)
