"""Hybrid: weights learned on validation beat complementary members; members save and load with it."""

import numpy as np
import pandas as pd
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.models.base import FitReport, Recommender, TrainConfig
from app.recsys.models.fusion import normalise_candidates
from app.recsys.models.hybrid import Hybrid, HybridConfig
from app.recsys.models.popularity import Popularity
from app.recsys.splits import leave_one_out
from app.recsys.training import ranking_score
from tests.recsys.synthetic import CATEGORIES, items_frame, taste_data, with_newcomer

CFG = TrainConfig(epochs=30, batch_size=32, lr=0.05, patience=10, seed=0)


class Taste(Recommender):
    """Test member that knows only taste: the share of the user's history in each item's category."""

    name = "taste"
    config_cls = HybridConfig  # any frozen config will do; nothing to tune

    def build(self, *, n_users: int, n_items: int) -> torch.nn.Module:
        return torch.nn.Module()

    def fit(self, train, valid, cfg, on_epoch=None) -> FitReport:
        self.bind(train)
        self.cats = torch.as_tensor(train.item_features[:, : len(CATEGORIES)])  # [I, C] one-hot
        return FitReport(epochs_run=1)

    reads_history = True

    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        share = history.seen_mask(users).float() @ self.cats  # [B, C]
        return share @ self.cats.T  # [B, I]

    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        return self.score_history(batch, np.arange(len(users))).gather(1, items)


def normalise_all(scores: torch.Tensor, seen: torch.Tensor, how: str, offset: float) -> torch.Tensor:
    """(B, I, M) scores normalised with every item as the reference (a small catalogue)."""
    return normalise_candidates(torch.cat([scores, scores], 1), scores.shape[1], ~seen, how, offset)


def test_normalisation_uses_unseen_items_only():
    scores = torch.tensor([[100.0, 1.0, 2.0, 3.0]]).unsqueeze(-1)  # [B, I, M]
    seen = torch.tensor([[True, False, False, False]])
    z = normalise_all(scores, seen, "zscore", 0.0)[..., 0]
    assert torch.allclose(z[0, 1:], torch.tensor([-1.2247, 0.0, 1.2247]), atol=1e-4)  # mean 2, std sqrt(2/3)
    r = normalise_all(scores, seen, "rank", 10.0)[..., 0]
    assert torch.allclose(r[0, 1:], 1.0 / torch.tensor([12.0, 11.0, 10.0]))  # ranks 2, 1, 0 among unseen items
    with pytest.raises(ValueError):
        normalise_all(scores, seen, "softmax", 0.0)


def test_each_member_is_normalised_on_its_own():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 20, 4, generator=gen)  # [B, I, M]
    seen = torch.rand(3, 20, generator=gen) < 0.3
    for how in ("zscore", "rank"):
        together = normalise_all(scores, seen, how, 10.0)
        alone = torch.cat([normalise_all(scores[..., m : m + 1], seen, how, 10.0) for m in range(4)], dim=-1)
        assert torch.allclose(together, alone, atol=1e-6)


def test_a_sampled_reference_estimates_the_catalogue_statistics():
    """Candidates normalised against a random half of the items land close to the full-catalogue values."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 4000, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.2]) + torch.tensor([0.0, 3.0, -1.0])
    seen = torch.zeros(2, 4000, dtype=torch.bool)
    exact = normalise_all(scores, seen, "zscore", 0.0)[:, :50]
    ref = torch.randperm(4000, generator=gen)[:2000]
    sampled = normalise_candidates(torch.cat([scores[:, :50], scores[:, ref]], 1), 50, ~seen[:, ref], "zscore", 0.0)
    assert (sampled - exact).abs().max() < 0.1


def popular_within_taste(n_users: int = 150, n_items: int = 60, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Users stay in their favourite category and pick its popular items (Zipf over the slots)."""
    rng = np.random.default_rng(seed)
    n_cat = len(CATEGORIES)
    slots = n_items // n_cat
    p = 1.0 / (np.arange(slots) + 1.0) ** 1.2
    user = np.repeat(np.arange(n_users), per_user)
    slot = rng.choice(slots, size=user.size, p=p / p.sum())
    item = slot * n_cat + user % n_cat
    ts = 1_000_000 + user * 1000 + np.tile(np.arange(per_user), n_users)
    frame = pd.DataFrame({"user_id": [f"u{u}" for u in user], "item_id": [f"i{j}" for j in item], "ts": ts})
    frame["value"] = 4.0
    return frame


def test_learned_weights_combine_complementary_members():
    data = InteractionData.from_frames(popular_within_taste(), items_frame(60))
    split = leave_one_out(data)
    members = [Popularity(), Taste()]
    for m in members:
        m.fit(split.train, split.valid, CFG)
    solo = {m.name: ranking_score(m, split.train, split.valid)["ndcg@10"] for m in members}
    hybrid = Hybrid.from_members(members)
    report = hybrid.fit(split.train, split.valid, CFG)
    valid_ndcg = ranking_score(hybrid, split.train, split.valid)["ndcg@10"]
    assert valid_ndcg == pytest.approx(report.best_metric)
    assert valid_ndcg >= max(solo.values()) + 0.05, (valid_ndcg, solo)
    w = torch.tensor(list(hybrid.weights.values()))
    assert not torch.allclose(w / w.abs().sum(), torch.full_like(w, 1 / len(w)), atol=0.05)
    # Each recommended item is credited to a member; contributions add up to the score.
    users = np.arange(5)
    everything = torch.arange(split.train.n_items).expand(5, -1)
    contrib = hybrid.contributions(split.train.select(users), users, everything)  # [B, I, M]
    assert torch.allclose(contrib.sum(-1), hybrid.score_history(split.train, users))
    top = torch.topk(contrib.sum(-1), 3).indices
    scores, names, codes = hybrid.explain_candidates(split.train.select(users), users, top)
    assert torch.allclose(scores, contrib.sum(-1).gather(1, top))
    assert set(names[codes.numpy()].ravel()) <= {"popularity", "taste"}
    assert torch.equal(codes, contrib.gather(1, top.unsqueeze(-1).expand(-1, -1, 2)).argmax(-1))


def test_a_large_catalogue_learns_the_weights_on_each_users_candidates():
    """Above fit_all_items the weights are fitted on the held-out item and every member's top unseen items
    (what retrieval gives ranking), and still learn the blend that beats each member."""
    data = InteractionData.from_frames(popular_within_taste(), items_frame(60))
    split = leave_one_out(data)
    members = [Popularity(), Taste()]
    for m in members:
        m.fit(split.train, split.valid, CFG)
    hybrid = Hybrid.from_members(members, HybridConfig(fit_all_items=10, fit_depth=8))
    users = np.unique(split.valid.users)
    held = torch.as_tensor(split.valid.items[split.valid.indptr[users]])
    candidates, repeat = hybrid.fit_candidates(split.train, users, held)
    assert candidates.shape == (len(users), 1 + 2 * 8) and torch.equal(candidates[:, 0], held)
    assert not repeat[:, 0].any() and not split.train.seen_mask(users).gather(1, candidates).any()
    for row, flags in zip(candidates.tolist(), repeat.tolist(), strict=True):  # each item counted once
        assert sorted(c for c, f in zip(row, flags, strict=True) if not f) == sorted(set(row))
    report = hybrid.fit(split.train, split.valid, CFG)
    assert report.best_metric is not None and np.isfinite(report.best_metric)
    w = torch.tensor(list(hybrid.weights.values()))
    assert not torch.allclose(w / w.abs().sum(), torch.full_like(w, 1 / len(w)), atol=0.05)
    full = ranking_score(hybrid, split.train, split.valid)["ndcg@10"]
    solo = {m.name: ranking_score(m, split.train, split.valid)["ndcg@10"] for m in members}
    assert full >= max(solo.values()) + 0.05, (full, solo)


@pytest.fixture(scope="module")
def trained():
    split = leave_one_out(taste_data())
    hybrid = Hybrid(HybridConfig(members=("popularity", "mf", "ease", "content")))
    hybrid.fit(split.train, split.valid, CFG)
    return hybrid, split


def test_fit_trains_its_own_members_and_keeps_them_fixed(trained):
    hybrid, split = trained
    assert list(hybrid.members) == ["popularity", "mf", "ease", "content"]
    assert all(m.net is not None for m in hybrid.members.values())
    before = {k: v.clone() for k, v in hybrid.members["mf"].net.state_dict().items()}
    again = Hybrid.from_members(hybrid.members)
    again.fit(split.train, split.valid, CFG)  # learns weights only
    after = again.members["mf"].net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_save_load_round_trip_with_members(trained, tmp_path):
    hybrid, split = trained
    hybrid.save(tmp_path / "hybrid")
    assert (tmp_path / "hybrid" / "members" / "content" / "weights.safetensors").is_file()
    loaded = Hybrid.load(tmp_path / "hybrid", device="cpu")
    assert list(loaded.members) == list(hybrid.members)
    assert loaded.weights == hybrid.weights
    users = np.arange(split.train.n_users)
    assert torch.equal(loaded.score_history(split.train, users), hybrid.score_history(split.train, users))
    top = torch.topk(loaded.score_history(split.train, np.array([0])), 5).indices
    assert torch.equal(
        loaded.explain_candidates(split.train.select([0]), np.array([0]), top)[2],
        hybrid.explain_candidates(split.train.select([0]), np.array([0]), top)[2],
    )


def test_one_user_scores_match_the_batch(trained):
    """Serving scores one user at a time (EASE sums the user's rows of B, the hybrid normalises its members
    in one pass): the same scores as that user's row of a batch, for every member and the hybrid."""
    hybrid, split = trained
    users = np.arange(split.train.n_users)
    for model in (*hybrid.members.values(), hybrid):
        batch = model.score_history(split.train, users)
        for u in (0, 7, len(users) - 1):
            one = model.score_history(split.train, np.array([u]))[0]
            assert torch.allclose(one, batch[u], atol=1e-4), model.name


def test_member_scores_of_many_users_are_scored_in_blocks_with_the_same_result(trained, monkeypatch):
    """Fitting the weights scores every fit user against every item: in blocks of FIT_CELLS cells (a member
    gathers a vector per cell), equal to scoring all of them at once."""
    hybrid, split = trained
    users = np.arange(split.train.n_users)
    items = torch.arange(split.train.n_items).expand(len(users), -1)
    whole = hybrid.member_scores(split.train.select(users), users, items)  # [U, I, M]
    width = split.train.n_items + hybrid.reference_items()[0].size
    monkeypatch.setattr("app.recsys.models.ensemble.FIT_CELLS", 7 * width)  # blocks of 7 users
    blocks = hybrid.member_scores_chunked(split.train, users, items)
    assert len(users) > 7 and blocks.shape == whole.shape and torch.allclose(blocks, whole, atol=1e-5)


def test_unseen_user_scored_by_history_members(trained):
    """A user absent from training (row past the last one): mf sits out, history-based members serve."""
    hybrid, split = trained
    history = with_newcomer(split.train)
    everything = torch.arange(split.train.n_items).unsqueeze(0)
    contrib = hybrid.contributions(history.select([split.train.n_users]), np.array([-1]), everything)[0]  # [I, M]
    assert torch.isfinite(contrib).all()
    assert torch.all(contrib[:, list(hybrid.members).index("mf")] == 0)
    scores = contrib.sum(-1)
    assert scores.std() > 0  # the remaining members still rank the catalogue for this user
