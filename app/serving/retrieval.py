"""Retrieval, the first stage: the few hundred items the ranking stage scores, out of the whole catalogue.

Each retriever gives its top ``depth`` items: a model's index over its item vectors searched with a query
vector (a user's, or a sequence's), and the most popular items. A model version without an index (its
catalogue is below DEEPREC_ANN_MIN_ITEMS) is searched exactly, every item scored. Candidates are kept in
the ranking model's columns, each with the retriever that found it first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.recsys.index import RETRIEVAL_FILE, SIMILAR_FILE
from app.recsys.models.abilities import ItemEmbeddings, ItemVectors
from app.serving.catalogue import Catalogue
from app.serving.registry import LoadedModel

POPULAR = "popular"
EVERY_ITEM = "all"


@dataclass(frozen=True)
class Candidates:
    cols: np.ndarray  # [K] distinct columns of the ranking model
    found_by: np.ndarray  # [K] index into ``sources`` of the retriever that found each first
    sources: tuple[str, ...]
    complete: bool  # every item the ranking model knows is a candidate: nothing to widen

    @classmethod
    def everything(cls, ranker: LoadedModel) -> Candidates:
        return cls(np.arange(ranker.n_items), np.zeros(ranker.n_items, np.int16), (EVERY_ITEM,), True)

    @classmethod
    def union(cls, ranker: LoadedModel, cat: Catalogue, found: list[tuple[str, LoadedModel, np.ndarray]]) -> Candidates:
        """The items each retriever found ([k] columns of its own model), in the ranker's columns, each once."""
        parts, owners = [], []
        for s, (_, lm, cols) in enumerate(found):
            rows = cat.aligned(lm)[0][cols[cols >= 0]]
            mine = cat.aligned(ranker)[1][rows[rows >= 0]]
            parts.append(mine[mine >= 0])
            owners.append(np.full(parts[-1].size, s, dtype=np.int16))
        cols = np.concatenate(parts) if parts else np.empty(0, np.int64)
        owner = np.concatenate(owners) if owners else np.empty(0, np.int16)
        first = np.sort(np.unique(cols, return_index=True)[1])  # each item once, found first where it was
        return cls(cols[first], owner[first], tuple(name for name, _, _ in found), False)


def popular_cols(lm: LoadedModel, cat: Catalogue, depth: int) -> np.ndarray:
    """The ``depth`` most popular active items the model knows, as its columns."""
    cols = cat.aligned(lm)[1][cat.popular_rows()[: 4 * depth]]
    return cols[cols >= 0][:depth]


def vectors(lm: LoadedModel, file: str) -> torch.Tensor:
    """[I, D] the vectors an index file searches (cosine ones normalised). Kept with the loaded version when
    it has no such index (a small catalogue: every request scans them); otherwise made for the one request
    that asked for an exact scan, so that no float32 copy of a large table stays in memory."""
    kept = lm.cache.get(file)
    if kept is not None:
        return kept
    model = lm.model
    with torch.no_grad():
        if file == RETRIEVAL_FILE and isinstance(model, ItemVectors):
            out = model.item_vectors().float()
        elif file == SIMILAR_FILE and isinstance(model, ItemEmbeddings):
            out = torch.nn.functional.normalize(model.item_embeddings().float(), dim=1)
        else:
            raise ValueError(f"{lm.name} has no vectors for {file}")
    if lm.index(file) is None:
        lm.cache[file] = out
    return out


@torch.no_grad()
def unit_rows(lm: LoadedModel, cols: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[..., D] the normalised item embeddings (the similar-items space) of ``cols`` (any shape; -1 reads
    item 0, for the caller to mask), reading only those rows of the model's table."""
    model = lm.model
    assert isinstance(model, ItemEmbeddings)
    table = model.item_embeddings()  # [I, D], not copied
    found = torch.as_tensor(cols, device=table.device).clamp(min=0)
    return torch.nn.functional.normalize(table[found].float(), dim=-1)


@torch.no_grad()
def rerank_similar(lm: LoadedModel, queries: torch.Tensor, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, D) unit queries, (B, k) columns the similar-items index found -> the same columns ordered by their
    exact float32 cosine, and those cosines. The index stores half-precision vectors, whose rounding
    reorders near-ties; this keeps the served order and scores exact among what the index found (recall
    itself comes from the search depth, ``similar_depth``), as the ranking stage does for the other
    endpoints. Reads only the k candidates' rows."""
    rows = unit_rows(lm, cols)  # [B, k, D]
    found = torch.as_tensor(cols, device=rows.device)
    sims = (rows @ queries.to(rows.device).unsqueeze(-1)).squeeze(-1).masked_fill(found < 0, float("-inf"))
    sims, order = sims.sort(dim=1, descending=True)
    return found.gather(1, order).cpu().numpy(), sims.cpu().numpy()


@torch.no_grad()
def search(
    lm: LoadedModel, file: str, queries: torch.Tensor, k: int, exact: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(B, D) queries -> (B, k) columns of ``lm`` (-1: none) and their similarities, best first: from the
    version's index, or by scoring every item when it has none or ``exact`` is asked."""
    cosine = file == SIMILAR_FILE
    index = None if exact else lm.index(file)
    if index is not None:
        q = torch.nn.functional.normalize(queries.float(), dim=1) if cosine else queries.float()
        found, sims = index.search(q.cpu().numpy(), k)
        return rerank_similar(lm, q, found) if cosine else (found, sims)
    v = vectors(lm, file)
    q = torch.nn.functional.normalize(queries.float(), dim=1) if cosine else queries.float()
    values, cols = torch.topk(q.to(v.device) @ v.T, min(k, v.shape[0]), dim=1)  # [B, k]
    return cols.cpu().numpy(), values.cpu().numpy()
