"""One training loop for every model (:class:`Trainer`), and the ranking validation it early-stops on.

A model supplies its loss over batches of its own pre-built tensors (``Recommender.start_fit`` returns
them as :class:`~app.recsys.models.base.Batches`), or a closed-form ``solve``; the trainer owns the
epochs, optimisers, seeds, validation, best-epoch weights, progress and the validation metrics.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import torch

from app.recsys.data import InteractionData
from app.recsys.metrics import loo_metrics
from app.recsys.models.abilities import RatingPredictor
from app.recsys.models.base import EpochCallback, EpochInfo, FitReport, Recommender, TrainConfig

if TYPE_CHECKING:
    from app.recsys.models.hybrid import Hybrid


def seed_everything(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_train_threads(threads: int = 0) -> None:
    """Use every core for training unless told otherwise (serving sets its own, lower count)."""
    torch.set_num_threads(threads if threads > 0 else max(1, os.cpu_count() or 1))


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when available; 'cuda' without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("DEEPREC_DEVICE=cuda but no CUDA device is available")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # plain SGD: the same step size for rare and frequent embedding rows
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: use adam, adamw or sgd")


class Optimizers:
    """The configured optimiser for dense parameters and, for sparse embeddings, SparseAdam (or plain SGD,
    which takes sparse gradients as they are, when SGD is configured), stepped together.

    A sparse embedding (``nn.Embedding(sparse=True)``: a sequence model's item table under the sampled
    softmax) gets gradients for the rows a batch read only, so an epoch's updates cost the rows touched
    rather than the whole catalogue at every step.
    """

    def __init__(self, net: torch.nn.Module, cfg: TrainConfig) -> None:
        sparse = [m.weight for m in net.modules() if isinstance(m, torch.nn.Embedding) and m.sparse]
        ids = {id(p) for p in sparse}
        dense = [p for p in net.parameters() if id(p) not in ids]
        self.all = [make_optimizer(dense, cfg)] if dense or not sparse else []
        if sparse and cfg.optimizer == "sgd":
            self.all.append(torch.optim.SGD(sparse, lr=cfg.lr))
        elif sparse:
            self.all.append(torch.optim.SparseAdam(sparse, lr=cfg.lr))

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.all:
            opt.step()


def sparsify_embeddings(net: torch.nn.Module, n_items: int, cfg: TrainConfig) -> bool:
    """Makes every embedding table of ``net`` sparse when the catalogue has more than ``cfg.sparse_above``
    items and the optimiser is plain Adam or SGD without weight decay: :class:`Optimizers` then steps them
    with SparseAdam (what Adam does to the rows a batch read), or with SGD, whose step on the rows a batch
    did not read is zero anyway, so a step costs the rows the batch read, not U + I rows. The tables must
    only be read through their ``forward`` (lookups) while training. Returns whether it did."""
    if n_items <= cfg.sparse_above or cfg.optimizer not in ("adam", "sgd") or cfg.weight_decay:
        return False
    for m in net.modules():
        if isinstance(m, torch.nn.Embedding):
            m.sparse = True
    return True


class Trainer:
    """The one training loop: every model's ``fit`` runs it (``Recommender.fit``).

    It owns what models share: the device, seeds, what the members or pre-training need first
    (``before_fit``), epochs of shuffled mini-batches over the model's ``Batches.loss``, the optimisers
    (SparseAdam for sparse tables), validation and early stopping on the best epoch's weights, the
    time limit, progress (``on_epoch``, ``verbose``) and the validation metrics kept in ``model.metrics``.
    A closed-form model (``closed_form``: popularity, EASE, the rating stack) is fitted by its ``solve``
    in one pass and validated once. Validation is NDCG@``eval_k`` on a fixed user sample
    (:func:`validation_score`), or RMSE for a model trained on ratings; ``valid`` reaches the model only
    when it holds something to validate on (ratings, for the rating objective), else it is None.
    """

    def __init__(self, cfg: TrainConfig, on_epoch: EpochCallback | None = None) -> None:
        self.cfg = cfg
        self.on_epoch = on_epoch

    def fit(self, model: Recommender, train: InteractionData, valid: InteractionData | None) -> FitReport:
        t_start = time.perf_counter()
        model.to(self.cfg.device)
        cfg = model.before_fit(train, valid, self.cfg, self.on_epoch)
        rating = cfg.objective == "rating" or model.rating_only
        metric = "rmse" if rating else f"ndcg@{cfg.eval_k}"
        usable = valid is not None and valid.n_interactions > 0 and (not rating or bool(valid.has_ratings().any()))
        held = valid if usable else None
        seed_everything(cfg.seed)  # the initial weights depend on the seed
        if model.closed_form:
            report = self._solve(model, train, held, cfg, metric)
        else:
            report = self._loop(model, train, held, cfg, metric, higher_is_better=not rating)
        if held is not None and report.best_metric is not None:
            if rating:
                model.metrics.update({f"valid_{k}": v for k, v in rating_errors(model, held).items()})
            else:
                model.metrics[f"valid_{metric}"] = report.best_metric
        report.seconds = time.perf_counter() - t_start  # what this model needed first included
        return report

    def _solve(
        self, model: Recommender, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, metric: str
    ) -> FitReport:
        t0 = time.perf_counter()
        loss = model.solve(train, valid, cfg)
        _fixed(model)
        report = FitReport(epochs_run=1, best_epoch=1, metric_name=metric)
        if valid is not None:
            with torch.no_grad():
                report.best_metric = float(model.validate(train, valid, cfg))
        seconds = time.perf_counter() - t0
        report.samples_per_second = train.n_interactions / max(seconds, 1e-9)
        report.history.append({"epoch": 1, "loss": loss or 0.0, metric: report.best_metric, "seconds": seconds})
        info = EpochInfo(1, 1, loss or 0.0, report.best_metric, metric, report.best_metric, 1, seconds)
        self._tell(model, info)
        return report

    def _loop(
        self,
        model: Recommender,
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        metric: str,
        higher_is_better: bool,
    ) -> FitReport:
        """Runs epochs of shuffled mini-batches; keeps the weights of the best validation epoch."""
        batches = model.start_fit(train, valid, cfg)
        assert model.net is not None
        net = model.net
        report = FitReport(metric_name=metric)
        if batches.n == 0:  # nothing to learn from: the initial weights stand
            return report
        gen = seed_everything(cfg.seed)
        opt = Optimizers(net, cfg)
        validate = batches.validate
        if validate is None and valid is not None:
            held = valid

            def validate() -> float:
                return model.validate(train, held, cfg)

        best_state: dict[str, torch.Tensor] | None = None
        best: float | None = None
        stale = 0
        t_start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            if batches.new_epoch is not None:
                batches.new_epoch(epoch)
            net.train()
            perm = torch.randperm(batches.n, generator=gen).to(model.device)
            total = torch.zeros((), device=model.device)
            for start in range(0, batches.n, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                loss = batches.loss(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach() * len(idx)
            epoch_loss = float(total) / batches.n
            net.eval()
            metric_value = None
            if validate is not None:
                model.prepare_for_serving()  # what scoring precomputes from the weights (content's catalogue)
                with torch.no_grad():
                    metric_value = float(validate())
            improved = metric_value is not None and (
                best is None or (metric_value > best if higher_is_better else metric_value < best)
            )
            if validate is None or improved:
                best, report.best_epoch, stale = metric_value, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                stale += 1
            seconds = time.perf_counter() - t0
            info = EpochInfo(epoch, cfg.epochs, epoch_loss, metric_value, metric, best, report.best_epoch, seconds)
            report.history.append({"epoch": epoch, "loss": epoch_loss, metric: metric_value, "seconds": seconds})
            report.epochs_run = epoch
            self._tell(model, info)
            if not np.isfinite(epoch_loss):
                raise FloatingPointError(f"{model.name}: loss became {epoch_loss} at epoch {epoch}")
            if validate is not None and stale >= cfg.patience:
                break
            if cfg.max_seconds and time.perf_counter() - t_start >= cfg.max_seconds:
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        _fixed(model)
        report.best_metric = best
        report.samples_per_second = batches.n * report.epochs_run / max(time.perf_counter() - t_start, 1e-9)
        if batches.finish is not None:
            batches.finish(report)
        return report

    def _tell(self, model: Recommender, info: EpochInfo) -> None:
        if self.cfg.verbose:
            _progress(model.name, info)
        if self.on_epoch is not None:
            self.on_epoch(info)


def _fixed(model: Recommender) -> None:
    """The fitted model in evaluation mode, with what scoring precomputes from its weights."""
    model.eval()
    model.prepare_for_serving()


def _progress(name: str, info: EpochInfo) -> None:
    width = 20
    done = int(width * info.epoch / info.epochs)
    metric = "" if info.metric is None else f" {info.metric_name} {info.metric:.4f} (best {info.best_metric:.4f})"
    bar = "#" * done + "." * (width - done)
    print(
        f"\r{name:>10} [{bar}] epoch {info.epoch}/{info.epochs} loss {info.loss:.4f}{metric} {info.seconds:.2f}s",
        file=sys.stderr,
        flush=True,
    )


# User x item scores one ranking batch holds (64 MiB of float32): a handful of [B, I] temporaries each.
SCORE_CELLS = 1 << 24


def eval_sample(targets: InteractionData, max_users: int, seed: int) -> InteractionData:
    """``targets`` restricted to a fixed random sample of at most ``max_users`` of its users (all when 0).

    The sample depends only on the users present and ``seed``, so every epoch, every model of a run
    and the validation and test sets of one split (same users) rank the same users.
    """
    users = np.unique(targets.users)
    if max_users <= 0 or users.size <= max_users:
        return targets
    keep = np.random.default_rng(seed).choice(users, max_users, replace=False)
    return targets.subset(np.isin(targets.users, keep))


# The smallest validation sample the score budget may shrink it to: below this NDCG@10 is mostly noise.
EVAL_MIN_USERS = 1_000


def eval_user_limit(cfg: TrainConfig, n_items: int) -> int:
    """How many users validation ranks (0: all): ``cfg.eval_users``, fewer when ranking them against every
    item would exceed ``cfg.eval_scores`` scores (full ranking costs users x items per epoch), never fewer
    than EVAL_MIN_USERS. An explicit 0 (all users) is kept as asked."""
    if cfg.eval_users <= 0 or cfg.eval_scores <= 0:
        return cfg.eval_users
    return min(cfg.eval_users, max(EVAL_MIN_USERS, cfg.eval_scores // max(n_items, 1)))


def validation_score(
    model: Recommender, history: InteractionData, targets: InteractionData, cfg: TrainConfig
) -> dict[str, float]:
    """:func:`ranking_score` at ``cfg.eval_k`` on the :func:`eval_user_limit` sample of ``targets``: what
    every model's early stopping and the pipeline's final evaluation measure."""
    limit = eval_user_limit(cfg, history.n_items)
    return ranking_score(model, history, eval_sample(targets, limit, cfg.seed), cfg.eval_k)


@torch.no_grad()
def ranking_score(
    model: Recommender,
    history: InteractionData,
    targets: InteractionData,
    k: int = 10,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Full-ranking metrics at K for each user's first target item, seen items of ``history`` excluded.

    Used for early stopping on a leave-one-out validation split (one target per user). A batch holds
    at most ``SCORE_CELLS`` user x item scores, so its few [B, I] temporaries stay small on any catalogue.
    """
    batch_size = max(1, min(batch_size, SCORE_CELLS // max(history.n_items, 1)))
    users = np.unique(targets.users)
    if users.size == 0:
        return loo_metrics(torch.empty(0), k)
    first = targets.indptr[users]
    target_items = torch.as_tensor(targets.items[first], device=model.device)
    if ranks_on_candidates(model, history.n_items):
        return loo_metrics(candidate_ranks(model, history, users, target_items), k)
    ranks = []
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = model.score_history(history, batch).float()  # [B, I]
        ranks.append(unseen_ranks(scores, history, batch, target_items[start : start + batch_size]))
    return loo_metrics(torch.cat(ranks), k)


def ranks_on_candidates(model: Recommender, n_items: int) -> TypeGuard[Hybrid]:
    """Whether ``ranking_score`` ranks ``model`` on its retrieval candidates (:func:`candidate_ranks`) rather
    than the whole catalogue: the implicit hybrid above its ``fit_all_items``, where scoring every item
    through every member costs O(U I M) gathered vectors (612 s at 10k items), while serving ranks only
    the candidates there anyway. (The rating stack, hybrid-rating, is scored by its errors, not ranked.)"""
    from app.recsys.models.hybrid import Hybrid

    return isinstance(model, Hybrid) and n_items > model.config.fit_all_items


@torch.no_grad()
def candidate_ranks(model: Hybrid, history: InteractionData, users: np.ndarray, targets: torch.Tensor) -> torch.Tensor:
    """(U,) users, (U,) held-out items -> (U,) 0-based rank of each target as the two-stage path would rank
    it: among the unseen items that the hybrid's members retrieve (each member's top ``fit_depth``,
    ``Hybrid.fit_candidates``), scored by the hybrid. A target that no member retrieves, or seen, or scored
    -inf/NaN, ranks last (``n_items - 1``), as in :func:`unseen_ranks`. Equal to full ranking when every
    member retrieves every unseen item (``fit_depth`` at least the catalogue). Cost: each member's full
    scores of U users once (a matmul), then U (1 + M fit_depth) hybrid scores."""
    n_items = history.n_items
    candidates, repeat = model.fit_candidates(history, users, targets)  # [U, W], column 0 is the target
    # Member m's top list is columns 1 + m depth ... ; a member that cannot score a user fills it with the
    # target, which is not a retrieval.
    hits = (candidates[:, 1:] == targets.unsqueeze(1)).view(len(users), -1, model.config.fit_depth)
    found = (hits.any(2) & ~hits.all(2)).any(1) if hits.shape[2] > 1 else hits.any(2).any(1)  # [U]
    rows_np, pos = history.rows_of(users)
    seen_keys = np.unique(rows_np * np.int64(n_items) + history.items[pos])
    cand_np = candidates.cpu().numpy()
    cand_keys = np.arange(len(users), dtype=np.int64)[:, None] * n_items + cand_np
    seen = torch.as_tensor(np.isin(cand_keys, seen_keys), device=candidates.device)  # [U, W]
    counted = ~(repeat | seen)
    counted[:, 0] = False  # the target itself
    known = np.where(users < model.dims.get("n_users", 0), users, -1)
    ranks = []
    for b in model.user_blocks(len(users), candidates.shape[1]):
        scores = model.score_candidates(history.select(users[b]), known[b], candidates[b]).float()  # [B, W]
        target = scores[:, :1]
        above = ((scores >= target) & counted[b]).sum(1)
        last = ~found[b] | seen[b, 0] | ~(target[:, 0] > float("-inf"))
        ranks.append(torch.where(last, torch.full_like(above, n_items - 1), above))
    return torch.cat(ranks)


def unseen_ranks(
    scores: torch.Tensor, history: InteractionData, users: np.ndarray, targets: torch.Tensor
) -> torch.Tensor:
    """[B, I] scores, [B] targets -> [B] 0-based pessimistic rank among the items ``users`` have not seen.

    Equal to ``target_ranks`` on the scores with seen items (and NaN) set to -inf, without writing that
    [B, I] mask: items scoring at least the target are counted, then the seen ones among them (a few
    per user, read by index) are taken off. A target scored -inf or NaN, or seen, ranks last.
    """
    n_items = scores.shape[1]
    target_scores = scores.gather(1, targets.unsqueeze(1))  # [B, 1]
    above = (scores >= target_scores).sum(1, dtype=torch.int64)  # [B], the target itself included
    rows_np, pos = history.rows_of(users)
    pairs = np.unique(rows_np * np.int64(n_items) + history.items[pos])  # an item seen twice is one item
    rows = torch.as_tensor(pairs // n_items, device=scores.device)  # [H]
    cols = torch.as_tensor(pairs % n_items, device=scores.device)  # [H]
    counted = scores[rows, cols] >= target_scores[rows, 0]  # [H] seen items counted in ``above``
    above -= torch.bincount(rows[counted], minlength=len(users))
    last = ~(target_scores[:, 0] > float("-inf"))  # -inf or NaN
    last[rows[cols == targets[rows]]] = True
    return torch.where(last, torch.full_like(above, n_items - 1), above - 1)


@torch.no_grad()
def rating_errors(model: Recommender, targets: InteractionData) -> dict[str, float]:
    """RMSE and MAE of the model's rating predictions on rows with a rating."""
    from app.recsys.metrics import mae, rmse

    if not isinstance(model, RatingPredictor):
        raise TypeError(f"{model.name} does not predict ratings")
    mask = targets.has_ratings()
    users = torch.as_tensor(targets.users[mask], device=model.device)
    items = torch.as_tensor(targets.items[mask], device=model.device)
    truth = torch.as_tensor(targets.ratings[mask], device=model.device)
    pred = model.predict_ratings(users, items)
    return {"rmse": rmse(pred, truth), "mae": mae(pred, truth)}
