"""NCF family: NeuMF pre-training from GMF + MLP, and both implicit losses learn planted tastes."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import TrainConfig, top_k
from app.recsys.models.gmf import GMF, GMFConfig
from app.recsys.models.mf import MF
from app.recsys.models.mlp import MLP, MLPConfig
from app.recsys.models.neumf import NeuMF, NeuMFConfig
from app.recsys.models.popularity import Popularity
from app.recsys.splits import leave_one_out
from tests.recsys.synthetic import CATEGORIES, items_frame, taste_data, taste_frame

CFG = TrainConfig(epochs=15, batch_size=64, lr=1e-2, num_negatives=4, patience=100, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def split():
    return leave_one_out(taste_data(n_users=100, n_items=100, per_user=20))


@pytest.fixture(scope="module")
def pair(split):
    gmf = GMF(GMFConfig(dim=8))
    mlp = MLP(MLPConfig(dim=8, layers=(16, 8)))
    gmf.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=3))
    mlp.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=3))
    return gmf, mlp


def taste_precision(model, data, n: int = 5) -> float:
    """Share of each user's top-n unseen items that lie in the category the user was planted to like."""
    users = np.arange(data.n_users)
    _, idx = top_k(model.score_history(data, users), n, data.seen_mask(users))
    fav = torch.tensor([int(u[1:]) % len(CATEGORIES) for u in data.user_ids]).unsqueeze(1)  # [U, 1]
    cat = torch.tensor([int(i[1:]) % len(CATEGORIES) for i in data.item_ids])  # [I]
    return float((cat[idx] == fav).float().mean())


def test_from_pretrained_copies_branches_and_blends_output(pair):
    gmf, mlp = pair
    neumf = NeuMF.from_pretrained(gmf, mlp, alpha=0.3)
    net = neumf.net
    assert torch.equal(net.gmf.user.weight, gmf.net.gmf.user.weight)
    assert torch.equal(net.gmf.item.weight, gmf.net.gmf.item.weight)
    for name, tensor in mlp.net.mlp.state_dict().items():
        assert torch.equal(net.mlp.state_dict()[name], tensor), name
    expected = torch.cat([0.3 * gmf.net.out.weight, 0.7 * mlp.net.out.weight], dim=1)
    assert torch.allclose(net.out.weight, expected)
    assert neumf.config.gmf_dim == 8 and neumf.config.layers == (16, 8)
    # The fused network starts as exactly alpha * GMF + (1 - alpha) * MLP.
    users = torch.arange(12)
    blended = 0.3 * gmf.score_users(users) + 0.7 * mlp.score_users(users)
    assert torch.allclose(neumf.score_users(users), blended, atol=1e-5)
    assert neumf.extra["pretrained"] is True


def test_fine_tuning_starts_from_pretrained_weights(pair, split):
    gmf, mlp = pair
    neumf = NeuMF.from_pretrained(gmf, mlp)
    start = neumf.net.gmf.item.weight.detach().clone()
    neumf.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=1))
    moved = neumf.net.gmf.item.weight.detach()
    # Fine-tuning nudges the copied embeddings; a re-initialised net would be unrelated to them.
    cos = torch.nn.functional.cosine_similarity(moved.flatten(), start.flatten(), dim=0)
    assert cos > 0.9
    assert not torch.equal(moved, start)


def test_pretrain_flag_trains_branches_inside_fit(split):
    model = NeuMF(NeuMFConfig(gmf_dim=8, mlp_dim=8, layers=(16, 8), pretrain=True))
    epochs = []
    model.fit(split.train, split.valid, dataclasses.replace(CFG, epochs=2), on_epoch=lambda info: epochs.append(info))
    assert len(epochs) == 6  # GMF, MLP, then the fused model
    assert model.extra["pretrained"] is True
    assert torch.isfinite(model.score_users(torch.arange(5))).all()


def test_pretrain_rejects_mismatched_models(pair, split):
    gmf, _ = pair
    other = MLP(MLPConfig(dim=8, layers=(16, 8)))
    small = leave_one_out(taste_data(n_users=30, n_items=100, per_user=20))
    other.fit(small.train, None, dataclasses.replace(CFG, epochs=1))
    with pytest.raises(ValueError, match="id maps"):
        NeuMF.from_pretrained(gmf, other)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
@pytest.mark.parametrize(
    "make",
    [
        lambda loss: MF(dataclasses.replace(MF.config_cls(), dim=16, loss=loss)),
        lambda loss: GMF(GMFConfig(dim=16, loss=loss)),
        lambda loss: MLP(MLPConfig(dim=16, layers=(32, 16), loss=loss)),
        lambda loss: NeuMF(NeuMFConfig(gmf_dim=16, mlp_dim=16, layers=(32, 16), loss=loss)),
    ],
    ids=["mf", "gmf", "mlp", "neumf"],
)
def test_implicit_losses_learn_planted_tastes(make, loss, split):
    pop = Popularity()
    pop.fit(split.train, None, CFG)
    model = make(loss)
    model.fit(split.train, None, dataclasses.replace(CFG, epochs=10, batch_size=256, lr=3e-2))
    learned, baseline = taste_precision(model, split.train), taste_precision(pop, split.train)
    assert learned > 0.6, f"{model.name}/{loss}: {learned:.2f}"
    assert learned > baseline + 0.4, f"{model.name}/{loss}: {learned:.2f} vs popularity {baseline:.2f}"


def test_unknown_loss_is_rejected(split):
    with pytest.raises(ValueError, match="loss"):
        GMF(GMFConfig(loss="hinge")).fit(split.train, None, CFG)


def test_chunked_full_scores_match_pairwise_scores(pair, monkeypatch):
    import app.recsys.models.ncf as ncf_module

    _, mlp = pair
    users = torch.arange(20)
    items = torch.arange(mlp.n_items).expand(len(users), -1)  # [B, I]
    pairwise = mlp.net(users, items)
    monkeypatch.setattr(ncf_module, "PAIR_BUDGET", 3 * mlp.n_items * 16)  # 3 users per chunk
    assert torch.allclose(mlp.score_users(users), pairwise, atol=1e-5)


@pytest.mark.parametrize("loss", ["bce", "bpr"])
def test_user_who_saw_every_item_is_masked_not_crashing(loss):
    frame = taste_frame(n_users=20, n_items=30, per_user=10)
    everything = pd.DataFrame(
        {"user_id": "u0", "item_id": [f"i{j}" for j in range(30)], "value": 4.0, "ts": 2_000_000 + np.arange(30)}
    )
    data = InteractionData.from_frames(pd.concat([frame, everything]), items_frame(30))
    model = GMF(GMFConfig(dim=8, loss=loss))
    report = model.fit(data, None, dataclasses.replace(CFG, epochs=2))
    assert all(np.isfinite(h["loss"]) for h in report.history)
