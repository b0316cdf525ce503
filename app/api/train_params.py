"""Types and ranges of the POST /v1/train ``params``: a bad value is a 422 naming its field, not a job that
fails later. Sanity limits on one value each; whether a model fits the worker's memory is the worker's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from app.api.errors import FieldError
from app.recsys.models import model_names
from app.recsys.pipeline import check_params, configs_for

# name -> (lowest, highest), both allowed
NUMBERS: dict[str, tuple[float, float]] = {
    "epochs": (1, 100_000),
    "batch_size": (1, 1_000_000),
    "eval_k": (1, 1000),
    "eval_users": (0, 100_000_000),
    "eval_scores": (0, 10**15),
    "max_seconds": (0.0, 10**7),  # 0: no time limit
    "lr": (1e-8, 10.0),
    "num_negatives": (1, 100),
    "patience": (0, 100_000),
    "seed": (0, 2**32 - 1),
    "weight_decay": (0.0, 1.0),
    "dim": (1, 1024),
    "gmf_dim": (1, 1024),
    "mlp_dim": (1, 1024),
    "hidden": (1, 4096),
    "heads": (1, 64),
    "layers": (1, 16),  # a count for the sequence models; the MLPs take a list of sizes (LAYER_SIZE)
    "dropout": (0.0, 0.95),
    "user_dropout": (0.0, 0.95),
    "alpha": (0.0, 1.0),
    "finetune_lr_scale": (0.0, 10.0),
    "half_life_days": (0.0, 36_500.0),
    "lam": (0.0, 1e7),
    "max_items": (1, 10_000_000),
    "max_fit_users": (1, 10_000_000),
    "reference_items": (1, 1_000_000),
    "fit_all_items": (0, 100_000_000),
    "fit_depth": (1, 10_000),
    "max_history": (1, 10_000),
    "max_len": (1, 1000),
    "num_sampled": (1, 100_000),
    "sampled_above": (0, 100_000_000),
    "sparse_above": (0, 100_000_000),
    "profile_half_life": (0.0, 10_000.0),
    "recency_half_life": (0.0, 10_000.0),
    "rank_offset": (0.0, 1e6),
    "rating_folds": (2, 20),
    "reg": (0.0, 10.0),
    "rating_reg": (0.0, 10.0),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "objective": ("implicit", "rating"),
    "optimizer": ("adam", "adamw", "sgd"),
    "loss": ("auto", "bce", "bpr", "full", "sampled", "softmax"),
    "sampler": ("popularity", "uniform"),
    "normalise": ("zscore", "rank"),
    "rating_counts": ("auto", "on", "off"),
    "device": ("auto", "cpu", "cuda"),
}
MODEL_LISTS = ("members",)
LAYER_SIZE = (1, 4096)
MAX_LIST = 16
FALLBACK = (-(2**31), 2**31)  # a field added to a config without a rule here still gets a bound
MAX_TEXT = 64


def _type_ok(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, tuple | list):
        return isinstance(value, list | tuple)
    return isinstance(value, type(default))


def _range_error(key: str, value: Any) -> str | None:
    """Why ``value`` is out of range for ``key`` (its type already checked), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        lo, hi = NUMBERS.get(key, FALLBACK)
        if not math.isfinite(value) or not lo <= value <= hi:
            return f"{value!r} outside {lo:g}..{hi:g}"
        return None
    if isinstance(value, str):
        choices = CHOICES.get(key)
        if choices is not None and value not in choices:
            return f"{value!r} is not one of {', '.join(choices)}"
        return f"longer than {MAX_TEXT} characters" if len(value) > MAX_TEXT else None
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST:
            return f"{len(value)} entries; at most {MAX_LIST}"
        if key in MODEL_LISTS:
            bad = [v for v in value if v not in model_names()]
            return f"unknown model(s) {bad}; valid: {', '.join(model_names())}" if bad else None
        lo, hi = LAYER_SIZE
        if not value or any(isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi for v in value):
            return f"expected 1 to {MAX_LIST} integers in {lo}..{hi}, got {value!r}"
    return None


def param_errors(names: list[str], params: dict[str, Any]) -> list[FieldError]:
    """Unknown keys (listing the known ones), values of the wrong type and values out of range, each
    naming its field."""
    try:
        check_params(names, params)
    except ValueError as e:
        return [FieldError(field="params", message=str(e))]
    errors: list[FieldError] = []
    for name in names:
        model_cfg, train_cfg = configs_for(name, None)
        defaults = {**dataclasses.asdict(train_cfg), **dataclasses.asdict(model_cfg)}
        own: Mapping[str, Any] = params[name] if isinstance(params.get(name), Mapping) else {}
        for prefix, values in (("params", params), (f"params.{name}", own)):
            for key, value in values.items():
                if key not in defaults:  # a model's own overrides (checked in its turn) or another model's field
                    continue
                if isinstance(value, Mapping) or not _type_ok(value, defaults[key]):
                    want = type(defaults[key]).__name__
                    shown = "an object" if isinstance(value, Mapping) else repr(value)
                    errors.append(FieldError(field=f"{prefix}.{key}", message=f"expected {want}, got {shown}"))
                elif (why := _range_error(key, value)) is not None:
                    errors.append(FieldError(field=f"{prefix}.{key}", message=why))
    return list({e.field: e for e in errors}.values())
