"""The hybrid's evaluation above ``fit_all_items`` ranks each target among the members' retrieved candidates
(what two-stage serving ranks): equal to full ranking when the members retrieve every unseen item, and a
target no member retrieves ranks last."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from app.recsys.data import InteractionData
from app.recsys.models.hybrid import Hybrid, HybridConfig
from app.recsys.models.popularity import Popularity
from app.recsys.splits import leave_one_out
from app.recsys.training import candidate_ranks, ranking_score, ranks_on_candidates, unseen_ranks
from tests.recsys.synthetic import items_frame
from tests.recsys.test_hybrid import CFG, Taste, popular_within_taste


@pytest.fixture(scope="module")
def fitted():
    data = InteractionData.from_frames(popular_within_taste(), items_frame(60))
    split = leave_one_out(data)
    members = [Popularity(), Taste()]
    for m in members:
        m.fit(split.train, split.valid, CFG)
    hybrid = Hybrid.from_members(members, HybridConfig(fit_all_items=10, fit_depth=8))
    hybrid.fit(split.train, split.valid, CFG)
    return hybrid, split


def exact_ranks(hybrid: Hybrid, split) -> torch.Tensor:
    users = np.unique(split.valid.users)
    targets = torch.as_tensor(split.valid.items[split.valid.indptr[users]])
    return unseen_ranks(hybrid.score_history(split.train, users).float(), split.train, users, targets)


def test_candidate_ranking_equals_full_ranking_when_every_item_is_retrieved(fitted):
    hybrid, split = fitted
    n = split.train.n_items
    exact = exact_ranks(hybrid, split)
    hybrid.config = replace(hybrid.config, fit_depth=n)  # each member retrieves the whole catalogue
    try:
        assert ranks_on_candidates(hybrid, n)
        users = np.unique(split.valid.users)
        targets = torch.as_tensor(split.valid.items[split.valid.indptr[users]])
        assert torch.equal(candidate_ranks(hybrid, split.train, users, targets), exact)
        full = ranking_score(hybrid, split.train, split.valid)
        hybrid.config = replace(hybrid.config, fit_all_items=10**9)  # below the threshold: full ranking
        assert not ranks_on_candidates(hybrid, n)
        assert ranking_score(hybrid, split.train, split.valid) == pytest.approx(full)
    finally:
        hybrid.config = replace(hybrid.config, fit_depth=8, fit_all_items=10)


def test_shallow_retrieval_ranks_a_target_no_member_found_last(fitted):
    hybrid, split = fitted
    n = split.train.n_items
    exact = exact_ranks(hybrid, split)
    users = np.unique(split.valid.users)
    targets = torch.as_tensor(split.valid.items[split.valid.indptr[users]])
    ranks = candidate_ranks(hybrid, split.train, users, targets)
    candidates, _ = hybrid.fit_candidates(split.train, users, targets)
    found = (candidates[:, 1:] == targets.unsqueeze(1)).any(1)
    assert found.any() and (~found).any()
    assert torch.all(ranks[~found] == n - 1)
    assert torch.all(ranks[found] <= exact[found])  # fewer competitors than the whole catalogue
    assert torch.all(ranks[found] < 2 * hybrid.config.fit_depth)
