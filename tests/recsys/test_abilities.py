"""The abilities retrieval and ranking rely on, checked against each model's own full-catalogue scores."""

import numpy as np
import pytest
import torch

from app.recsys.models import get_model_class, model_names
from app.recsys.models.abilities import ItemEmbeddings, ItemVectors, RatingPredictor, SequenceQueries, UserQueries
from app.recsys.models.base import TrainConfig
from app.recsys.splits import leave_one_out
from tests.recsys.synthetic import taste_data

CFG = TrainConfig(epochs=3, batch_size=256, lr=5e-3, patience=100, seed=0)
# Which models declare which ability: a new model must be added here on purpose.
VECTORS = {"mf", "gmf", "content", "gru4rec", "sasrec"}
EMBEDDINGS = VECTORS | {"mlp", "neumf"}
SEQUENCES = {"gru4rec", "sasrec"}
RATERS = {"mf", "gmf", "mlp", "neumf", "content", "hybrid-rating"}


@pytest.fixture(scope="module")
def split():
    return leave_one_out(taste_data())


@pytest.fixture(scope="module")
def trained(split):
    """name -> the model fitted on ``split``, trained once per module on first use."""
    cache = {}

    def get(name):
        if name not in cache:
            model = get_model_class(name)()
            model.fit(split.train, split.valid, CFG)
            cache[name] = model.eval()
        return cache[name]

    return get


@pytest.fixture(params=model_names())
def fitted(request, trained):
    return trained(request.param)


def test_abilities_are_declared(fitted):
    name = fitted.name
    assert isinstance(fitted, ItemVectors) == (name in VECTORS)
    assert isinstance(fitted, UserQueries) == (name in VECTORS)
    assert isinstance(fitted, ItemEmbeddings) == (name in EMBEDDINGS)
    assert isinstance(fitted, SequenceQueries) == (name in SEQUENCES)
    assert isinstance(fitted, RatingPredictor) == (name in RATERS)


def test_candidate_scores_equal_full_scores(fitted, split):
    users = np.arange(12)
    full = fitted.score_history(split.train, users)  # [B, I]
    items = torch.as_tensor(np.random.default_rng(0).integers(0, split.train.n_items, (12, 9)))
    got = fitted.score_candidates(split.train.select(users), users, items)
    assert got.shape == (12, 9)
    torch.testing.assert_close(got, full.gather(1, items), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_inner_products_order_items_as_the_scores_do(name, trained, split):
    fitted = trained(name)
    users = np.arange(12)
    full = fitted.score_history(split.train, users)  # [B, I]
    q = fitted.user_queries(split.train.select(users), users)  # [B, D]
    dots = q @ fitted.item_vectors().T  # [B, I]
    offset = full - dots  # one constant per user
    torch.testing.assert_close(offset, offset[:, :1].expand_as(offset), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_sequence_queries_give_the_sequence_scores(name, trained, split):
    fitted = trained(name)
    seqs = torch.as_tensor(split.train.sequences(fitted.config.max_len, np.arange(5)))
    torch.testing.assert_close(
        fitted.sequence_queries(seqs) @ fitted.item_vectors().T, fitted.score_sequences(seqs), rtol=1e-5, atol=1e-5
    )
