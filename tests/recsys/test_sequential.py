"""Sequence models: windows, the planted next-item chain, padding invariance, anonymous sessions."""

import pandas as pd
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.models import get_model_class
from app.recsys.models.base import TrainConfig
from app.recsys.models.seqbase import training_windows
from app.recsys.splits import leave_one_out
from app.recsys.training import ranking_score
from tests.recsys.synthetic import chain_frame

SEQ_MODELS = ["gru4rec", "sasrec"]
CFG = TrainConfig(epochs=30, batch_size=16, lr=5e-3, seed=0)
SMALL = {"dim": 32, "max_len": 16, "dropout": 0.1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def chain():
    return leave_one_out(InteractionData.from_frames(chain_frame()))


def fit(name, split, **overrides):
    cls = get_model_class(name)
    model = cls(cls.config_cls(**{**SMALL, **overrides}))
    # No validation: the chain saturates it within a few epochs and early stopping would then keep
    # an epoch that still scores the last item itself highly (LOO ranking excludes it anyway).
    model.fit(split.train, None, CFG)
    return model


@pytest.fixture(scope="module", params=SEQ_MODELS)
def fitted(request, chain):
    return fit(request.param, chain)


def encode(model, items):
    """External item ids -> (1, len) item index + 1."""
    return torch.as_tensor(pd.Index(model.item_ids).get_indexer(items) + 1).unsqueeze(0)


def test_training_windows_cut_long_histories_from_the_end():
    df = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"],
            "item_id": ["i0", "i1", "i2", "i3", "i4", "i0"],
            "ts": [1, 2, 3, 4, 5, 1],
        }
    )
    data = InteractionData.from_frames(df)
    inputs, targets = training_windows(data, max_len=3)
    # a: i0..i4 -> 4 transitions -> windows [i2 i3 i4] <- [i1 i2 i3] and [_ _ i1] <- [_ _ i0]; b: none.
    assert inputs.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert targets.tolist() == [[3, 4, 5], [0, 0, 2]]


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_score_users_is_refused_with_a_clear_error(name, chain):
    model = get_model_class(name)()
    with pytest.raises(NotImplementedError, match="score_history"):
        model.score_users(torch.arange(3))


def test_learns_the_planted_chain(fitted, chain):
    history = chain.train.union(chain.valid)
    metrics = ranking_score(fitted, history, chain.test, k=1)
    assert metrics["hr@1"] >= 0.9, f"{fitted.name}: {metrics}"


def test_left_padding_does_not_change_scores(fitted):
    short = encode(fitted, ["i3", "i4", "i5"])  # [1, 3]
    padded = torch.cat([torch.zeros(1, 6, dtype=torch.long), short], dim=1)  # [1, 9]
    long = encode(fitted, [f"i{j}" for j in range(10, 19)])  # [1, 9] in the same batch
    alone = fitted.score_sequences(short)
    batched = fitted.score_sequences(torch.cat([padded, long]))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fitted.score_sequences(padded), alone, atol=1e-5, rtol=1e-5)


def test_scores_anonymous_sessions(fitted):
    # Item lists of no known user, one longer than max_len (only its latest items count).
    sessions = [["i7", "i8", "i9"], ["i28", "i29"], ["i13", "i14"], [f"i{j}" for j in range(0, 25)]]
    expected = ["i10", "i0", "i15", "i25"]
    width = max(len(s) for s in sessions)
    seqs = torch.zeros(len(sessions), width, dtype=torch.long)
    for row, session in enumerate(sessions):  # building the test input, not a hot path
        seqs[row, width - len(session) :] = encode(fitted, session)[0]
    scores = fitted.score_sequences(seqs)
    assert scores.shape == (len(sessions), fitted.n_items)
    assert torch.isfinite(scores).all()
    assert [fitted.item_ids[i] for i in scores.argmax(1).tolist()] == expected


@pytest.mark.parametrize(("name", "sampler"), [("gru4rec", "popularity"), ("sasrec", "uniform")])
def test_sampled_softmax_learns_the_chain(name, sampler, chain):
    model = fit(name, chain, loss="auto", sampled_above=10, num_sampled=8, sampler=sampler)
    assert model.extra["loss"] == "sampled"
    assert model.net.item.sparse  # SparseAdam updates only the rows a batch read
    metrics = ranking_score(model, chain.train.union(chain.valid), chain.test, k=1)
    assert metrics["hr@1"] >= 0.8, f"{name}/{sampler}: {metrics}"


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_default_train_config_is_a_train_config(name):
    cls = get_model_class(name)
    cfg = cls.default_train_config()
    assert isinstance(cfg, TrainConfig) and cfg.epochs > 0 and cfg.lr > 0
    assert cls.sequential
