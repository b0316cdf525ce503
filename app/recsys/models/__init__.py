"""Model registry: name -> class, imported lazily so the API starts without loading every model."""

from __future__ import annotations

import importlib

from app.recsys.models.base import Recommender

_REGISTRY: dict[str, str] = {
    "popularity": "app.recsys.models.popularity:Popularity",
    "mf": "app.recsys.models.mf:MF",
    "gmf": "app.recsys.models.gmf:GMF",
    "mlp": "app.recsys.models.mlp:MLP",
    "neumf": "app.recsys.models.neumf:NeuMF",
    "ease": "app.recsys.models.ease:EASE",
    "content": "app.recsys.models.content:Content",
    "gru4rec": "app.recsys.models.gru4rec:GRU4Rec",
    "sasrec": "app.recsys.models.sasrec:SASRec",
    "hybrid": "app.recsys.models.hybrid:Hybrid",
    "hybrid-rating": "app.recsys.models.stacking:RatingStack",
}


def model_names() -> list[str]:
    return list(_REGISTRY)


def get_model_class(name: str) -> type[Recommender]:
    try:
        module, cls = _REGISTRY[name].split(":")
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid: {', '.join(_REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)
