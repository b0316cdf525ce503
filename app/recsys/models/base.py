"""The interface every recommender shares: fit, score all items, save and load without pickle.

A model says how it learns, and the one trainer (``app.recsys.training.Trainer``) runs it: a model
trained by gradient steps builds its network and training tensors in ``start_fit`` and returns its
loss over a batch (:class:`Batches`); a closed-form model sets ``closed_form`` and fits in ``solve``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from app.recsys.data import FeatureSchema, InteractionData

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every model; model shapes live in each model's own config."""

    epochs: int = 30
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    patience: int = 5
    seed: int = 0
    device: str = "cpu"
    num_negatives: int = 1
    eval_k: int = 10
    # Validation ranks at most this many users (a fixed sample drawn from ``seed``); 0 ranks them all.
    # Full ranking costs users x items per epoch: 10k users keeps it seconds on a 1M-item catalogue.
    eval_users: int = 10_000  # validation ranks a fixed sample of at most this many users (0: all)
    eval_scores: int = 1_000_000_000  # and at most this many user x item scores: fewer users on a huge catalogue
    # Above this many items the embedding tables are sparse (SparseAdam): a step updates the rows it read,
    # not the whole catalogue. Dense Adam at or below it (unchanged on ML-100K).
    sparse_above: int = 20_000
    objective: str = "implicit"  # implicit | rating
    verbose: bool = False
    # Stop after the epoch that ends past this many seconds of training (0: no limit). The first run
    # caps its quick models with it (app.commands.first_run); a normal train leaves it at 0.
    max_seconds: float = 0.0


@dataclass
class EpochInfo:
    epoch: int
    epochs: int
    loss: float
    metric: float | None
    metric_name: str
    best_metric: float | None
    best_epoch: int
    seconds: float


@dataclass
class FitReport:
    epochs_run: int = 0
    best_epoch: int = 0
    best_metric: float | None = None
    metric_name: str = ""
    seconds: float = 0.0
    samples_per_second: float = 0.0
    history: list[dict] = field(default_factory=list)


EpochCallback = Callable[[EpochInfo], None]


@dataclass
class Batches:
    """What a model trained by gradient steps hands the trainer (``Recommender.start_fit``).

    ``n`` samples (rows of tensors the model built) are shuffled into mini-batches each epoch, and
    ``loss(idx)`` maps a batch's (B,) sample indices to the scalar loss to minimise. Optional hooks:
    ``new_epoch(epoch)`` before each epoch (fresh negatives), ``validate()`` in place of the model's
    ``validate`` (the hybrid validates on cached member scores), and ``finish(report)`` once the best
    epoch's weights are back. The trainer drops this object after the fit, and with it every training
    tensor the closures hold. ``n == 0``: nothing to learn from, the initial weights stand.
    """

    n: int
    loss: Callable[[torch.Tensor], torch.Tensor]
    new_epoch: Callable[[int], None] | None = None
    validate: Callable[[], float] | None = None
    finish: Callable[[FitReport], None] | None = None

    @classmethod
    def nothing(cls) -> Batches:
        """No training samples: the trainer runs no epoch and the initial weights stand."""
        return cls(0, _no_loss)


def _no_loss(idx: torch.Tensor) -> torch.Tensor:
    raise AssertionError("Batches.nothing() has no loss to compute")


class Recommender:
    """Base class. Subclasses set ``name``, ``config_cls`` and implement ``build``, ``start_fit`` (or
    ``closed_form`` and ``solve``) and scoring; ``fit`` is the trainer's, the same for every model.

    ``net`` is a torch module whose state dict is the whole learned state; everything else
    needed to rebuild it (config, dims, id maps, feature schema, metrics) goes to meta.json.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    sequential: ClassVar[bool] = False  # scores from an item sequence (serves unseen users/sessions)
    # reads each user's items at scoring time (``score_history``), so it serves users unseen in training
    reads_history: ClassVar[bool] = False
    # can be trained with objective 'rating' (whether an instance was: ``trained_on_ratings``)
    supports_rating: ClassVar[bool] = False
    rating_only: ClassVar[bool] = False  # trains on ratings whatever the run's objective (the rating stack)
    for_ratings: ClassVar[str | None] = None  # the model a run with objective 'rating' trains in its place
    uses_features: ClassVar[bool] = False
    # Models a pipeline trains first and hands to ``use_dependencies`` (the hybrid's members);
    # ``rating_depends_on`` replaces them for the rating objective (None: the same).
    depends_on: ClassVar[tuple[str, ...]] = ()
    rating_depends_on: ClassVar[tuple[str, ...] | None] = None
    # Models of the same run this one can start from (``from_pretrained``) when its config asks to.
    pretrain_from: ClassVar[tuple[str, ...]] = ()
    # Fitted in one pass by ``solve`` (counts, a linear system), with no training loop.
    closed_form: ClassVar[bool] = False

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_cls()
        self.net: torch.nn.Module | None = None
        self.dims: dict[str, int] = {}
        self.user_ids = np.empty(0, dtype=object)
        self.item_ids = np.empty(0, dtype=object)
        self.feature_schema = FeatureSchema()
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # JSON-serialisable model state that is not a tensor
        self.device = torch.device("cpu")

    # -- to implement ---------------------------------------------------------------------------
    def build(self, *args: Any, **dims: Any) -> torch.nn.Module:
        """The network for the dimensions ``bind`` passes: n_users, n_items and the model's own; each
        model's override names the ones it takes (which is why this signature accepts any)."""
        raise NotImplementedError

    def start_fit(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> Batches:
        """Build the network (``bind``) and the training tensors; return the loss over a batch of them.

        Models trained by gradient steps implement it. ``valid`` is None when there is nothing to validate
        on; ``cfg`` is what ``before_fit`` returned."""
        raise NotImplementedError(f"{self.name} has no training loop")

    def solve(self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig) -> float | None:
        """Closed-form models (``closed_form = True``): build and fit in one pass; the training loss if any."""
        raise NotImplementedError(f"{self.name} is not fitted in closed form")

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """(B,) user indices -> (B, n_items) relevance scores; higher is better."""
        raise NotImplementedError

    def score_history(self, history: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) user indices -> (B, n_items), given the interactions known so far.

        The default ignores history (the user embedding holds it); sequential and profile-based
        models read each user's latest items from ``history``.
        """
        return self.score_users(torch.as_tensor(users, device=self.device))

    def score_candidates(self, batch: InteractionData, users: np.ndarray, items: torch.Tensor) -> torch.Tensor:
        """Scores of given items for a batch of users, equal to ``score_history`` at those items.

        ``batch`` holds the items of the batch's users, row b for the user users[b] (``data.select(users)``
        of a data set); ``users`` are the users' indices in this model (-1: a user it never saw, served
        from their items by the models that read them); ``items`` is (B, K) item indices -> (B, K) scores.
        Scoring K items rather than the catalogue is what lets a ranking stage afford a large catalogue.
        """
        raise NotImplementedError(f"{self.name} does not score given candidates")

    # -- training: the one entry point, and hooks with defaults --------------------------------
    def fit(
        self,
        train: InteractionData,
        valid: InteractionData | None,
        cfg: TrainConfig,
        on_epoch: EpochCallback | None = None,
    ) -> FitReport:
        """Train on ``train``, early-stopping on ``valid``: :class:`~app.recsys.training.Trainer` runs it."""
        from app.recsys.training import Trainer

        return Trainer(cfg, on_epoch).fit(self, train, valid)

    def before_fit(
        self, train: InteractionData, valid: InteractionData | None, cfg: TrainConfig, on_epoch: EpochCallback | None
    ) -> TrainConfig:
        """Train what this model starts from (an ensemble's members, NeuMF's pre-training) and return the
        settings of its own fit: ``cfg`` by default."""
        return cfg

    def validate(self, train: InteractionData, valid: InteractionData, cfg: TrainConfig) -> float:
        """The early-stopping metric on ``valid``: RMSE of a rating model, else NDCG@``eval_k`` of full ranking
        on a fixed user sample (``validation_score``)."""
        from app.recsys.training import rating_errors, validation_score

        if cfg.objective == "rating" or self.rating_only:
            return rating_errors(self, valid)["rmse"]
        return validation_score(self, train, valid, cfg)[f"ndcg@{cfg.eval_k}"]

    # -- optional, with defaults that do nothing --------------------------------------------------
    @classmethod
    def dependencies_for(cls, objective: str | None = None) -> tuple[str, ...]:
        """What a pipeline must train before this model for ``objective``."""
        if objective == "rating" and cls.rating_depends_on is not None:
            return cls.rating_depends_on
        return cls.depends_on

    @classmethod
    def wants_pretrained(cls, config: Any) -> bool:
        """Whether a model with ``config`` starts from the ``pretrain_from`` models of the run."""
        return False

    @classmethod
    def from_pretrained(cls, *models: Recommender, config: Any = None) -> Self:
        """A model warm-started from trained ``pretrain_from`` models (in that order)."""
        raise NotImplementedError(f"{cls.name} does not start from other models")

    @classmethod
    def item_limit(cls, config: Any) -> int | None:
        """The largest catalogue the default set trains a model with ``config`` on (None: no limit). EASE
        also refuses to train above it (its dense I x I matrices); the rating stack trains when named."""
        return None

    def use_dependencies(self, trained: dict[str, Recommender]) -> None:
        """Pipeline hook: the ``depends_on`` models trained earlier in the same run (none by default)."""

    # -- shared ---------------------------------------------------------------------------------
    def bind(self, data: InteractionData, **dims: int) -> torch.nn.Module:
        """Remember the id maps and feature schema of ``data`` and build the network."""
        self.user_ids, self.item_ids = data.user_ids, data.item_ids
        self.feature_schema = data.feature_schema
        self.dims = {"n_users": data.n_users, "n_items": data.n_items, **dims}
        self.net = self.build(**self.dims).to(self.device)
        return self.net

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def to(self, device: torch.device | str) -> Self:
        self.device = torch.device(device)
        if self.net is not None:
            self.net.to(self.device)
        return self

    def eval(self) -> Self:
        if self.net is not None:
            self.net.eval()
        return self

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {} if self.net is None else self.net.state_dict()
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(path / WEIGHTS_FILE))
        meta = {
            "name": self.name,
            "config": asdict(self.config),
            "dims": self.dims,
            "user_ids": [str(u) for u in self.user_ids],
            "item_ids": [str(i) for i in self.item_ids],
            "feature_schema": self.feature_schema.to_dict(),
            "metrics": self.metrics,
            "extra": self.extra,
        }
        (path / META_FILE).write_text(json.dumps(meta, default=_json_default))

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> Self:
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text())
        names = {f.name for f in fields(cls.config_cls)}
        model = cls(cls.config_cls(**{k: v for k, v in meta["config"].items() if k in names}))
        model.device = torch.device(device)
        model.user_ids = np.asarray(meta["user_ids"], dtype=object)
        model.item_ids = np.asarray(meta["item_ids"], dtype=object)
        model.feature_schema = FeatureSchema.from_dict(meta["feature_schema"])
        model.metrics = meta.get("metrics", {})
        model.extra = meta.get("extra", {})
        model.dims = meta["dims"]
        model.net = model.build(**model.dims)
        state = load_file(str(path / WEIGHTS_FILE), device=str(model.device))
        model.net.load_state_dict(state)
        model.net.to(model.device).eval()
        model.after_load(path)
        return model

    def after_load(self, path: Path) -> None:
        """Hook for models that keep more than one network (the hybrid loads its members here)."""

    def prepare_for_serving(self) -> None:
        """Precompute what only depends on the weights, now fixed: called once a version is loaded for
        serving, and by the trainer before each validation and after the fit (nothing by default)."""


def trained_on_ratings(model: Recommender) -> bool:
    """The model predicts ratings on the data set's scale (trained with objective 'rating'): the one
    test of "is this a rating model" for training, storing and serving."""
    return model.supports_rating and model.extra.get("objective") == "rating"


def tuned_train_config(cls: type[Recommender], objective: str = "implicit") -> TrainConfig:
    """The model class's tuned ``default_train_config`` for ``objective`` (models tuned for one objective
    take no argument); ``TrainConfig()`` for a class without one."""
    default = getattr(cls, "default_train_config", None)
    if not callable(default):
        return TrainConfig()
    if "objective" in inspect.signature(default).parameters:
        return default(objective=objective)
    return default()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, I) scores, (B, I) bool exclusions -> (B, k') values and indices, best first.

    Excluded items are never returned: where fewer than k items remain, the tail is dropped
    (k' < k) or, for rows with fewer candidates than others, marked with index -1.
    """
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    k = min(k, scores.shape[1])
    values, idx = torch.topk(scores, k, dim=1)
    idx = idx.masked_fill(torch.isneginf(values), -1)
    return values, idx
