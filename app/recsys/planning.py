"""What a training run will cost before it starts: per-model peak memory and time formulas, the memory
this process may use, and the refusal of models that would not fit.

Sizes are U users, I items, E training events; d is a model's embedding size. Estimates are upper
bounds of the bytes a model's fit and evaluation allocate on top of the loaded snapshot (measured for
mf and EASE on synthetic data: see the tests), plus what every model trained earlier in the run keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.recsys.models.base import TrainConfig
from app.recsys.models.ensemble import FIT_CELLS
from app.recsys.training import SCORE_CELLS

F32, I64 = 4, 8
# Weights, gradients, two Adam moments and the best epoch's copy of every parameter.
ADAM_COPIES = 5
# Bytes per user x item score in one ranking batch: the scores, the model's own [B, I] temporaries
# and the comparison with the target (up to about 24), counted twice: the allocator keeps what
# validation freed while the final evaluation allocates its own (measured).
SCORE_BYTES = 48
# Allocator arenas, thread buffers and small tensors of any fit (measured about 40 MiB for popularity).
FIXED_BYTES = 64 << 20
# Kept free for everything else in the process: a share of the memory and a fixed amount.
MARGIN_SHARE = 0.10
MARGIN_BYTES = 512 << 20
# The split of the snapshot (train, valid, test) and the train + valid history of the final evaluation:
# users, items, ts (int64) and ratings (float32), twice.
SPLIT_BYTES_PER_EVENT = 2 * (3 * I64 + F32)

CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
MEMINFO = Path("/proc/meminfo")


MEMBER_DIM = 128  # the widest member vectors the hybrid's estimate allows for (the defaults use 64)


@dataclass(frozen=True)
class Sizes:
    users: int
    items: int
    events: int
    ratings: int | None = None  # events with an explicit rating (None: not known)

    @classmethod
    def of(cls, data: Any) -> Sizes:
        """The sizes of an ``InteractionData`` (or anything with n_users, n_items, n_interactions)."""
        has = getattr(data, "has_ratings", None)
        ratings = int(has().sum()) if callable(has) else None
        return cls(int(data.n_users), int(data.n_items), int(data.n_interactions), ratings)


@dataclass(frozen=True)
class Estimate:
    model: str
    peak_bytes: int  # while it trains and is evaluated
    resident_bytes: int  # what it keeps once trained (later models of the run train beside it)
    cost: str  # time per epoch, in U, I, E and the config

    def describe(self) -> str:
        return f"{self.model}: peak {gib(self.peak_bytes)}, keeps {gib(self.resident_bytes)}, time {self.cost}"


class ModelTooLarge(RuntimeError):
    """A model of the run would not fit in the memory this process may use; raised before anything trains."""

    def __init__(self, model: str, estimate: int, available: int, why: str) -> None:
        self.model, self.estimate, self.available, self.why = model, estimate, available, why
        super().__init__(
            f"{model} does not fit: it needs about {gib(estimate)} and {gib(available)} is available ({why}). "
            f"Train it on fewer items, with a smaller dim, or choose another model (--model default picks "
            f"what fits)"
        )


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# -- the memory this process may use ---------------------------------------------------------------
def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def cgroup_free() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), None without a limit."""
    for limit_file, usage_file in (
        (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current"),
        (CGROUP_V1 / "memory.limit_in_bytes", CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        limit = _read_int(limit_file)
        if limit is not None and limit < 1 << 60:  # v1 writes a huge number for "no limit"
            return max(0, limit - (_read_int(usage_file) or 0))
    return None


def mem_available() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (what the kernel can hand out without swapping)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int:
    """Bytes a run may still allocate: the smaller of the cgroup's room and MemAvailable, less a margin
    (``MARGIN_SHARE`` of it and ``MARGIN_BYTES``). Unknown on both counts: no limit."""
    known = [n for n in (cgroup_free(), mem_available()) if n is not None]
    if not known:
        return 1 << 62
    free = min(known)
    return max(0, int(free * (1 - MARGIN_SHARE)) - MARGIN_BYTES)


# -- per-model estimates ---------------------------------------------------------------------------
def _ranking(sizes: Sizes) -> int:
    """Peak of one full-ranking batch (``ranking_score``): at most SCORE_CELLS user x item scores."""
    rows = max(1, min(1024, SCORE_CELLS // max(sizes.items, 1), sizes.users))
    return SCORE_BYTES * rows * sizes.items + FIXED_BYTES


def _negatives(sizes: Sizes, k: int) -> int:
    """NegativeSampler: the sorted positive keys, the [E, k] draw, its repeats and the masked copy."""
    return I64 * sizes.events * (2 + 4 * k)


def _pair(model: str, sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    """MF and the NCF family: embeddings per user and item trained with Adam on sampled negatives."""
    u, i, e = sizes.users, sizes.items, sizes.events
    k = max(1, train.num_negatives)
    if model == "neumf":
        d, layers = cfg.gmf_dim + cfg.mlp_dim, tuple(cfg.layers)
    else:
        d, layers = cfg.dim, tuple(getattr(cfg, "layers", ()))
    params = (u + i) * (d + 1) + sum(a * b for a, b in zip((2 * d, *layers), layers, strict=False))
    width = d + sum(layers)  # activations per scored pair
    batch = 6 * F32 * train.batch_size * (1 + k) * width  # forward and backward of one batch
    peak = ADAM_COPIES * F32 * params + _negatives(sizes, k) + I64 * e + batch + _ranking(sizes)
    if layers:  # the MLP tower scores the catalogue in 16 MB chunks per layer
        peak += 2 * F32 * (1 << 22) * (len(layers) + 1)
    if model == "neumf" and cfg.pretrain:  # fit trains a GMF and an MLP first and keeps them
        peak += 2 * F32 * params
    tower = " + ".join(f"{a}x{b}" for a, b in zip((2 * d, *layers), layers, strict=False))
    per_pair = f"(d + {tower})" if tower else "d"
    adam = "sparse Adam" if i > train.sparse_above else "+ (E / B)(U + I) d dense Adam"
    cost = f"O(E (1 + k) {per_pair}) per epoch {adam}, k={k}, d={d}; validation O(U_v I d)"
    return Estimate(model, int(peak), int(F32 * params), cost)


def _popularity(sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    peak = 2 * I64 * sizes.events + 3 * I64 * sizes.items + _ranking(sizes)
    return Estimate("popularity", int(peak), F32 * sizes.items, "O(E) once")


def _ease(sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    from app.recsys.models.ease import EASE_BYTES_PER_CELL

    i = sizes.items
    peak = EASE_BYTES_PER_CELL * i * i + 3 * I64 * (1 << 22) + 2 * I64 * sizes.events + _ranking(sizes)
    return Estimate("ease", int(peak), F32 * i * i + I64 * (sizes.events + sizes.users), "O(E I + I^3) once")


def _content(sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    u, i, e, d, h = sizes.users, sizes.items, sizes.events, cfg.dim, cfg.hidden
    n_features = 64  # a typical encoded feature width (categories, year, hashed title tokens)
    params = u * d + i * (d + 1) + n_features * h + h * (d + 1) + d * d
    windows = 2 * I64 * e  # the item column and each event's user start: a batch's windows are gathered
    b = train.batch_size
    if cfg.loss == "softmax" and i > cfg.sampled_above:
        # A step encodes only the batch's items, its profiles' items and K negatives; validation encodes the
        # catalogue once, without gradients (hidden layer and output, twice for the activation's copy).
        catalogue = 2 * F32 * i * (h + d + 1)
        touched = b + cfg.num_sampled + b * cfg.max_history
        step = 4 * F32 * touched * (h + d + 1) + 3 * F32 * b * (cfg.num_sampled + 1)
    else:
        catalogue = 4 * F32 * i * (h + d + 1)  # the encoder runs over every item each step, with gradients
        step = 3 * F32 * b * i if cfg.loss == "softmax" else 6 * F32 * b * (1 + train.num_negatives) * d
    step += 4 * F32 * b * cfg.max_history * d
    peak = ADAM_COPIES * F32 * params + catalogue + windows + step + F32 * i * n_features + _ranking(sizes)
    if cfg.loss == "softmax" and i > cfg.sampled_above:  # the encoder sees each batch's distinct items only
        cost = f"O(E (L + K / B) h d + E K d) per epoch, sampled softmax K={cfg.num_sampled}, L={cfg.max_history}"
    else:
        cost = (
            f"O(E (d L + {'I d' if cfg.loss == 'softmax' else 'k d'}) + (E / B) I h d) per epoch, L={cfg.max_history}"
        )
    return Estimate("content", int(peak), int(F32 * (params + i * n_features)), cost)


def _sequential(model: str, sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    """GRU4Rec and SASRec: item embeddings shared by input and output, trained at every position."""
    from app.recsys.models.seqbase import SequentialRecommender

    u, i, e, d, n = sizes.users, sizes.items, sizes.events, cfg.dim, cfg.max_len
    sampled = SequentialRecommender.sampled_for(cfg, i)
    windows = 2 * I64 * (e + u * n)  # inputs and targets, [W, L] each with W <= E / L + U
    positions = train.batch_size * min(n, max(1, e // max(u, 1)) + 1)  # real targets in a batch
    if model == "sasrec":
        params = (i + 1) * d + n * d + cfg.layers * (6 * d * d + 8 * d)
        hidden = positions * d * 16 * cfg.layers + train.batch_size * cfg.heads * n * n * 3 * cfg.layers
        encode = f"{cfg.layers} L d (d + L)" if cfg.layers > 1 else "L d (d + L)"
    else:
        params = (i + 1) * d + cfg.layers * 3 * (d + cfg.hidden) * cfg.hidden * 2 + cfg.hidden * d
        hidden = positions * (d + cfg.hidden) * 8
        encode = f"{cfg.layers} h (d + h)" if cfg.layers > 1 else "h (d + h)"
    width = cfg.num_sampled + 1 if sampled else i
    logits = 3 * F32 * positions * width + (F32 * cfg.num_sampled * d * 3 if sampled else 0)
    peak = ADAM_COPIES * F32 * params + windows + F32 * hidden + logits + _ranking(sizes)
    out, loss = ("K d", f"sampled softmax K={cfg.num_sampled}") if sampled else ("I d", "full softmax")
    cost = f"O(E ({encode} + {out})) per epoch, {loss}, d={d}; validation O(U_v I d)"
    return Estimate(model, int(peak), int(F32 * params), cost)


def _hybrid(sizes: Sizes, cfg: Any, train: TrainConfig, members: int) -> Estimate:
    """The fusion weights over the members' scores of ``max_fit_users`` validation users."""
    users = min(cfg.max_fit_users, sizes.users)
    width = sizes.items if sizes.items <= cfg.fit_all_items else 1 + members * cfg.fit_depth
    cached = users * width * (F32 * members + 1)  # member scores and the seen mask
    gather = F32 * FIT_CELLS * (MEMBER_DIM + 2 * members)  # a block of member scoring: vectors gathered per cell
    step = 3 * F32 * users * width + 3 * F32 * 256 * sizes.items + gather  # fused validation; member scoring
    peak = cached + step + _ranking(sizes)
    cost = f"O(U_fit W M) per epoch, U_fit={users:,}, W={width:,}, M={members}"
    if sizes.items > cfg.fit_all_items:  # evaluation ranks each user's retrieved candidates
        cost += f"; evaluation O(U_v (M I d + W M)), W={width:,}"
    return Estimate("hybrid", int(peak), F32 * (sizes.users + 2 * members), cost)


def _rating_stack(sizes: Sizes, cfg: Any, train: TrainConfig) -> Estimate:
    """The rating stack: its rating members trained one after another (each keeps its weights while the next
    trains), then a ridge solve over the validation ratings (negligible beside them)."""
    from app.recsys.models.stacking import RATING_MEMBERS, RatingStack, RatingStackConfig

    stack = RatingStack(cfg if isinstance(cfg, RatingStackConfig) else None)
    peak = kept = 0
    parts = []
    for name in stack.configured_members() or RATING_MEMBERS:
        member = estimate(name, sizes, *_rating_configs(name))
        peak = max(peak, kept + member.peak_bytes)
        kept += member.resident_bytes
        parts.append(name)
    cost = f"its members' on ratings ({', '.join(parts)}), then O(N M^2) ridge solves over N validation ratings"
    return Estimate("hybrid-rating", int(peak), int(kept), cost)


def _rating_configs(name: str) -> tuple[Any, TrainConfig]:
    from app.recsys.pipeline import configs_for

    return configs_for(name, {"objective": "rating"})


Estimator = Callable[[Sizes, Any, TrainConfig], Estimate]
ESTIMATORS: dict[str, Estimator] = {
    "popularity": _popularity,
    "mf": lambda s, c, t: _pair("mf", s, c, t),
    "gmf": lambda s, c, t: _pair("gmf", s, c, t),
    "mlp": lambda s, c, t: _pair("mlp", s, c, t),
    "neumf": lambda s, c, t: _pair("neumf", s, c, t),
    "ease": _ease,
    "content": _content,
    "gru4rec": lambda s, c, t: _sequential("gru4rec", s, c, t),
    "sasrec": lambda s, c, t: _sequential("sasrec", s, c, t),
    "hybrid-rating": _rating_stack,
}


def estimate(
    name: str, sizes: Sizes, model_cfg: Any = None, train_cfg: TrainConfig | None = None, *, members: int = 0
) -> Estimate:
    """Peak and resident bytes and the time formula of one model (tuned defaults unless configs are given).

    A model without an estimator of its own is counted like MF at its config's ``dim`` (64 without one).
    """
    from app.recsys.pipeline import configs_for

    if model_cfg is None or train_cfg is None:
        model_cfg, train_cfg = configs_for(name, None)
    if name == "hybrid":
        return _hybrid(sizes, model_cfg, train_cfg, max(members, 1))
    fn = ESTIMATORS.get(name)
    if fn is None:
        from app.recsys.models.mf import MFConfig

        dim = getattr(model_cfg, "dim", 64)
        return dataclasses.replace(_pair("mf", sizes, MFConfig(dim=dim), train_cfg), model=name)
    return fn(sizes, model_cfg, train_cfg)


def plan(names: Sequence[str], sizes: Sizes, params: Mapping[str, Any] | None = None) -> list[tuple[Estimate, int]]:
    """Each model of a run in order, with what the run needs while it trains: the split, every model
    trained before it (kept for the hybrid and the results) and its own peak."""
    from app.recsys.pipeline import configs_for, dependencies_for

    held = SPLIT_BYTES_PER_EVENT * sizes.events
    out = []
    for name in names:
        model_cfg, train_cfg = configs_for(name, params)
        members = sum(1 for n in names if n in dependencies_for(name, train_cfg.objective))
        est = estimate(name, sizes, model_cfg, train_cfg, members=members)
        out.append((est, held + est.peak_bytes))
        held += est.resident_bytes
    return out


def check_fits(
    names: Sequence[str], sizes: Sizes, params: Mapping[str, Any] | None = None, available: int | None = None
) -> list[Estimate]:
    """Raises :class:`ModelTooLarge` for the first model of the run whose need exceeds ``available``
    (default :func:`available_memory`); returns the estimates when all fit."""
    room = available_memory() if available is None else available
    estimates = []
    for est, need in plan(names, sizes, params):
        if need > room:
            why = (
                f"U={sizes.users:,}, I={sizes.items:,}, E={sizes.events:,}; its own peak "
                f"{gib(est.peak_bytes)}, the split and earlier models of the run {gib(need - est.peak_bytes)}"
            )
            raise ModelTooLarge(est.model, need, room, why)
        estimates.append(est)
    return estimates
