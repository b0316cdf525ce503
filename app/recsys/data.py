"""InteractionData: contiguous ids, a time-ordered CSR of users to items, ratings and item features.

Built from pandas frames with vectorised numpy only, so ML-100K snapshots in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class FeatureSchema:
    """How item features were built, so the same encoding applies to items added later."""

    categories: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    numeric_mean: list[float] = field(default_factory=list)
    numeric_std: list[float] = field(default_factory=list)
    text_buckets: int = 0

    @property
    def dim(self) -> int:
        return len(self.categories) + len(self.numeric) + self.text_buckets

    def to_dict(self) -> dict:
        return {
            "categories": self.categories,
            "numeric": self.numeric,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
            "text_buckets": self.text_buckets,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSchema:
        return cls(**d)

    def encode(self, items: pd.DataFrame) -> np.ndarray:
        """[n, dim] features for an items frame (columns title, categories, attributes)."""
        n = len(items)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        if self.categories:
            cats = items["categories"] if "categories" in items else pd.Series([[]] * n)
            exploded = cats.reset_index(drop=True).explode().dropna()
            col = pd.Index(self.categories).get_indexer(exploded.astype(str).to_numpy())
            keep = col >= 0
            out[exploded.index.to_numpy()[keep], col[keep]] = 1.0
        off = len(self.categories)
        if self.numeric:
            attrs = _attributes_frame(items, self.numeric)
            vals = attrs.to_numpy(dtype=np.float64)
            mean = np.asarray(self.numeric_mean)
            std = np.asarray(self.numeric_std)
            z = (vals - mean) / std
            out[:, off : off + len(self.numeric)] = np.nan_to_num(z, nan=0.0).astype(np.float32)
        off += len(self.numeric)
        if self.text_buckets:
            titles = items["title"].fillna("").astype(str) if "title" in items else pd.Series([""] * n)
            tokens = titles.reset_index(drop=True).str.lower().str.findall(r"[a-z0-9]+").explode().dropna()
            if len(tokens):
                hashed = pd.util.hash_array(tokens.to_numpy(dtype=object)) % np.uint64(self.text_buckets)
                np.add.at(out, (tokens.index.to_numpy(), off + hashed.astype(np.int64)), 1.0)
                block = out[:, off:]
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                out[:, off:] = block / np.maximum(norms, 1e-6)
        return out


def _attributes_frame(items: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    attrs = items["attributes"] if "attributes" in items else pd.Series([{}] * len(items))
    frame = pd.DataFrame.from_records([a if isinstance(a, dict) else {} for a in attrs], columns=list(keys))
    return frame.apply(pd.to_numeric, errors="coerce")


def build_feature_schema(items: pd.DataFrame, *, text_buckets: int = 0, max_categories: int = 512) -> FeatureSchema:
    """Learn the encoding from an items frame: category vocabulary and numeric attribute statistics."""
    if len(items) == 0:
        return FeatureSchema(text_buckets=text_buckets)
    cats: list[str] = []
    if "categories" in items:
        counts = items["categories"].explode().dropna().astype(str).value_counts()
        cats = sorted(counts.index[:max_categories].tolist())
    numeric: list[str] = []
    means: list[float] = []
    stds: list[float] = []
    if "attributes" in items:
        keys = sorted({k for a in items["attributes"] if isinstance(a, dict) for k in a})
        frame = _attributes_frame(items, keys)
        for k in keys:
            col = frame[k]
            if col.notna().mean() >= 0.1 and col.nunique() > 1:
                numeric.append(k)
                means.append(float(col.mean()))
                stds.append(float(col.std()) or 1.0)
    return FeatureSchema(cats, numeric, means, stds, text_buckets)


@dataclass
class InteractionData:
    """Interactions over a fixed catalogue; every split of one snapshot shares its id maps.

    Rows are sorted by (user, time), so ``indptr`` also gives each user's time-ordered sequence.
    """

    user_ids: np.ndarray  # [U] external ids
    item_ids: np.ndarray  # [I] external ids
    users: np.ndarray  # [N] int64 user index
    items: np.ndarray  # [N] int64 item index
    ratings: np.ndarray  # [N] float32, NaN for implicit events
    ts: np.ndarray  # [N] int64 unix seconds
    item_features: np.ndarray  # [I, F] float32
    feature_schema: FeatureSchema = field(default_factory=FeatureSchema)
    indptr: np.ndarray = field(init=False)  # [U + 1]

    def __post_init__(self) -> None:
        order = np.lexsort((np.arange(len(self.users)), self.ts, self.users))
        if not np.array_equal(order, np.arange(len(order))):
            self.users, self.items = self.users[order], self.items[order]
            self.ratings, self.ts = self.ratings[order], self.ts[order]
        counts = np.bincount(self.users, minlength=self.n_users)
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        *,
        text_buckets: int = 0,
        dedupe: bool = True,
    ) -> InteractionData:
        """Build from frames with columns user_id, item_id, ts, value (rating or NaN).

        The catalogue is every item in ``items`` plus every item interacted with, so items that
        only have features are part of it. Repeated (user, item) pairs keep their latest event.
        """
        df = interactions
        if dedupe:
            df = df.sort_values("ts", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
        user_codes, user_ids = pd.factorize(df["user_id"].astype(str), sort=True)
        known_items = df["item_id"].astype(str)
        if items is not None and len(items):
            catalogue = pd.Index(pd.unique(pd.concat([items["item_id"].astype(str), known_items])))
        else:
            catalogue = pd.Index(pd.unique(known_items))
        catalogue = catalogue.sort_values()
        item_codes = catalogue.get_indexer(known_items)
        values = df["value"] if "value" in df else pd.Series(np.nan, index=df.index)
        if items is not None and len(items):
            schema = build_feature_schema(items, text_buckets=text_buckets)
            aligned = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id", keep="last")
            aligned = aligned.set_index("item_id").reindex(catalogue).reset_index()
            aligned["categories"] = aligned["categories"].apply(lambda c: c if isinstance(c, list) else [])
            feats = schema.encode(aligned)
        else:
            schema = FeatureSchema()
            feats = np.zeros((len(catalogue), 0), dtype=np.float32)
        return cls(
            user_ids=np.asarray(user_ids, dtype=object),
            item_ids=np.asarray(catalogue, dtype=object),
            users=user_codes.astype(np.int64),
            items=item_codes.astype(np.int64),
            ratings=pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float32),
            ts=df["ts"].to_numpy(dtype=np.int64),
            item_features=feats,
            feature_schema=schema,
        )

    def subset(self, mask: np.ndarray) -> InteractionData:
        """The interactions where ``mask`` is true, over the same users and catalogue."""
        return replace(
            self, users=self.users[mask], items=self.items[mask], ratings=self.ratings[mask], ts=self.ts[mask]
        )

    def union(self, other: InteractionData) -> InteractionData:
        """Both sets of interactions (same snapshot), e.g. train + validation as test-time history."""
        return replace(
            self,
            users=np.concatenate([self.users, other.users]),
            items=np.concatenate([self.items, other.items]),
            ratings=np.concatenate([self.ratings, other.ratings]),
            ts=np.concatenate([self.ts, other.ts]),
        )

    # -- shape ----------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    def user_counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def has_ratings(self) -> np.ndarray:
        return np.isfinite(self.ratings)

    # -- lookups --------------------------------------------------------------------------------
    def rows_of(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(batch row, interaction position) for every interaction of the given users, vectorised."""
        users = np.asarray(users, dtype=np.int64)
        starts = self.indptr[users]
        lens = self.indptr[users + 1] - starts
        rows = np.repeat(np.arange(len(users)), lens)
        first = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        return rows, first + np.arange(lens.sum())

    def seen_mask(self, users: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """[B, I] bool: items each user interacted with."""
        rows, pos = self.rows_of(users)
        mask = torch.zeros((len(users), self.n_items), dtype=torch.bool, device=device)
        mask[torch.as_tensor(rows, device=device), torch.as_tensor(self.items[pos], device=device)] = True
        return mask

    def sequences(self, max_len: int, users: np.ndarray | None = None) -> np.ndarray:
        """[B, max_len] each user's latest items in time order, item index + 1, left-padded with 0."""
        users = np.arange(self.n_users) if users is None else np.asarray(users, dtype=np.int64)
        rows, pos = self.rows_of(users)
        ends = self.indptr[users + 1]
        back = ends[rows] - pos  # 1 for the latest item
        keep = back <= max_len
        out = np.zeros((len(users), max_len), dtype=np.int64)
        out[rows[keep], max_len - back[keep]] = self.items[pos[keep]] + 1
        return out

    def select(self, users: np.ndarray) -> InteractionData:
        """The interactions of ``users`` (indices, repeats allowed), user b of the result being users[b]:
        what a batch of requests is scored from (``Recommender.score_candidates``)."""
        users = np.asarray(users, dtype=np.int64)
        rows, pos = self.rows_of(users)
        return replace(
            self,
            user_ids=self.user_ids[users],
            users=rows,
            items=self.items[pos],
            ratings=self.ratings[pos],
            ts=self.ts[pos],
        )

    def user_index(self, external: Sequence[str]) -> np.ndarray:
        """Contiguous index per external user id, -1 where unknown."""
        return pd.Index(self.user_ids).get_indexer(pd.Index([str(u) for u in external]))

    def item_index(self, external: Sequence[str]) -> np.ndarray:
        return pd.Index(self.item_ids).get_indexer(pd.Index([str(i) for i in external]))

    def stats(self) -> dict:
        finite = self.ratings[np.isfinite(self.ratings)]
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": self.n_interactions,
            "n_ratings": int(finite.size),
            "rating_mean": float(finite.mean()) if finite.size else None,
            "rating_min": float(finite.min()) if finite.size else None,
            "rating_max": float(finite.max()) if finite.size else None,
        }
