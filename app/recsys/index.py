"""Approximate nearest-neighbour indexes over a model's item vectors (usearch HNSW), saved in its version folder.

``index.usearch`` searches ``item_vectors()`` by inner product (retrieval for users and sequences) and
``similar.usearch`` searches ``item_embeddings()`` by cosine (item to item). Both are written when a version
is saved, in usearch's own file format (no pickle), and covered by the version's manifest checksums. A
catalogue below ``min_items`` gets none: an exact scan is fast and exact there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.recsys.models.abilities import ItemEmbeddings, ItemVectors
from app.recsys.models.base import META_FILE, Recommender

RETRIEVAL_FILE = "index.usearch"
SIMILAR_FILE = "similar.usearch"
METRICS = {RETRIEVAL_FILE: "ip", SIMILAR_FILE: "cos"}
# HNSW shape (BENCHMARKS.md "Scale": recall against exact search and build time): links per node, the
# candidate list while building, and the least candidate list while searching.
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 64
STORAGE = "f16"  # half-precision vectors: half the memory, the same recall there


@dataclass
class VectorIndex:
    """An HNSW index whose keys are item indices (model columns)."""

    index: object  # usearch.index.Index
    metric: str

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str, threads: int = 0) -> VectorIndex:
        """[I, D] float32 vectors -> an index over keys 0..I-1; ``threads`` 0 uses every core."""
        from usearch.index import Index

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        index = Index(ndim=vectors.shape[1], metric=metric, dtype=STORAGE, connectivity=CONNECTIVITY,
                      expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)  # fmt: skip
        index.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=threads)
        return cls(index, metric)

    @classmethod
    def load(cls, path: Path, metric: str) -> VectorIndex:
        """A saved index, memory-mapped read-only: API processes on one machine share its pages."""
        from usearch.index import Index

        return cls(Index.restore(str(path), view=True), metric)

    def save(self, path: Path) -> None:
        self.index.save(str(path))  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.index)  # type: ignore[arg-type]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[B, D] queries -> [B, k] item indices (-1 where fewer were found) and [B, k] similarities
        (inner products, or cosines), best first."""
        from usearch.index import BatchMatches

        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(len(queries), -1)
        k = max(1, min(k, len(self)))
        self.index.expansion_search = max(EXPANSION_SEARCH, k)  # type: ignore[attr-defined]
        found = self.index.search(queries, k, threads=1)  # type: ignore[attr-defined]
        if isinstance(found, BatchMatches):
            counts = np.asarray(found.counts).reshape(len(queries))
        else:  # one query: usearch answers with the matches of that one
            counts = np.array([len(found)])
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
        distances = np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
        missing = np.arange(keys.shape[1])[None, :] >= counts[:, None]
        keys[missing] = -1
        return keys, np.where(missing, -np.inf, 1.0 - distances).astype(np.float32)


def index_vectors(model: Recommender) -> dict[str, np.ndarray]:
    """The vectors each index file of ``model`` is built from (none for a model without them)."""
    out = {}
    with torch.no_grad():
        if isinstance(model, ItemVectors):
            out[RETRIEVAL_FILE] = model.item_vectors().float().cpu().numpy()
        if isinstance(model, ItemEmbeddings):
            out[SIMILAR_FILE] = model.item_embeddings().float().cpu().numpy()
    return out


def write_indexes(model: Recommender, folder: Path, min_items: int | None, threads: int = 0) -> dict[str, float]:
    """Build and save ``model``'s indexes into ``folder`` when its catalogue has ``min_items`` or more
    items (None: never); returns the seconds each file took to build and write."""
    if min_items is None or model.n_items < min_items:
        return {}
    took = {}
    for name, vectors in index_vectors(model).items():
        t0 = time.perf_counter()
        VectorIndex.build(vectors, METRICS[name], threads).save(Path(folder) / name)
        took[name] = round(time.perf_counter() - t0, 3)
    return took


def load_indexes(folder: Path) -> dict[str, VectorIndex]:
    """The indexes saved in a version folder, by file name."""
    folder = Path(folder)
    return {
        name: VectorIndex.load(folder / name, metric) for name, metric in METRICS.items() if (folder / name).is_file()
    }


def load_vectors(folder: Path) -> np.ndarray:
    """The retrieval vectors of a saved model version folder (for bench/ann.py)."""
    from app.recsys.models import get_model_class

    meta = json.loads((Path(folder) / META_FILE).read_text())
    return index_vectors(get_model_class(meta["name"]).load(Path(folder)))[RETRIEVAL_FILE]
