"""What a model can do beyond scoring the whole catalogue, declared as small protocols checked with isinstance.

Retrieval needs item vectors and a query vector whose inner products order items as the model's scores
do; "similar items" needs item embeddings; predict needs ratings. (Scoring given candidates is part of
every model: ``Recommender.score_candidates``.) A model declares an ability by
implementing the method; serving asks ``isinstance(model, ItemVectors)``, never ``getattr`` probing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from app.recsys.data import InteractionData


@runtime_checkable
class ItemVectors(Protocol):
    """Scores are inner products with item vectors: score(q, i) = query(q) . item_vectors()[i] + c(q), where
    c depends on the query only, so the top items of a query are its maximum-inner-product search."""

    def item_vectors(self) -> torch.Tensor:
        """[I, D] one vector per item (retrieval space)."""
        ...


@runtime_checkable
class UserQueries(Protocol):
    """A query vector per user from their learned state and/or their items (matches ``item_vectors``)."""

    def user_queries(self, batch: InteractionData, users: np.ndarray) -> torch.Tensor:
        """(B,) users and their items, as for ``Recommender.score_candidates`` -> (B, D)."""
        ...


@runtime_checkable
class SequenceQueries(Protocol):
    """A query vector after a sequence of items (matches ``item_vectors``): next-item retrieval."""

    def sequence_queries(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices + 1, left-padded with 0 -> (B, D)."""
        ...


@runtime_checkable
class ItemEmbeddings(Protocol):
    """Learned item embeddings whose cosine similarity means "similar items"."""

    def item_embeddings(self) -> torch.Tensor:
        """[I, D] raw (not normalised) item embeddings."""
        ...


@runtime_checkable
class RatingPredictor(Protocol):
    """Predicts ratings on the data set's scale for (user, item) pairs, once trained with objective 'rating'."""

    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B,)."""
        ...


@runtime_checkable
class ExplainsCandidates(Protocol):
    """An ensemble that says which member added most to each candidate's score."""

    def explain_candidates(
        self, batch: InteractionData, users: np.ndarray, items: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
        """As ``score_candidates``: (B, K) scores, the member names and (B, K) the index of the member that
        added most to each; ``weights`` ([M]) replace the learned member weights."""
        ...


@runtime_checkable
class FeatureEncoder(Protocol):
    """Encodes items from their features alone, so items newer than the model can be scored and matched."""

    def encode_items(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """[M, F] encoded features (``feature_schema.encode``) -> [M, D], comparable with ``item_embeddings``."""
        ...

    def score_new_items(
        self, batch: InteractionData, users: np.ndarray, features: np.ndarray | torch.Tensor
    ) -> torch.Tensor:
        """(B,) users and their items, as for ``score_candidates``, and [M, F] features -> [B, M] scores."""
        ...
