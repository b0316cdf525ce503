"""`deeprec demo-data`: a synthetic catalogue and event log with the structure real logs have.

- long-tail item popularity (Zipf);
- user tastes concentrated on a home genre and its neighbours on a ring of related genres;
- drift: each user's current interest walks along the ring over time, and after an item users
  often go on to its successor (the next in its series), so sequence models have signal;
- explicit ratings on a half-star scale, higher where the item matches the user's taste;
- items with a title, categories and a year.
All of it is vectorised numpy, generated and written in chunks of users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.ingest.loader import UPSERT_CHUNK, ImportReport, Loader

# Neighbours on this ring are related, so a drifting interest moves between similar genres.
GENRES = (
    "Action", "Adventure", "Fantasy", "Sci-Fi", "Horror", "Thriller", "Crime", "Film-Noir", "Mystery",
    "Drama", "War", "Western", "Documentary", "Musical", "Romance", "Comedy", "Children", "Animation",
)  # fmt: skip
ADJECTIVES = np.array(
    "Silent Broken Golden Hidden Last Crimson Lost Midnight Frozen Burning Quiet Wild Electric "
    "Distant Secret Hollow Iron Paper Velvet Northern Endless Shattered Bright Lonely".split()
)
NOUNS = np.array(
    "Harbor Empire Garden River Signal Kingdom Letter Machine Horizon Orchard Station Mirror Voyage "
    "Promise Shadow Circus Island Engine Summer Winter Frontier Chorus Lantern Archive".split()
)
COUNTRIES = np.array(["US", "GB", "DE", "FR", "IN", "BR", "JP", "NZ", "CA", "ES"])
OVERSAMPLE = 2.5  # walk length per wanted event; repeats of an item are dropped


@dataclass(frozen=True)
class DemoConfig:
    users: int = 2_000
    items: int = 1_500
    events: int = 100_000
    seed: int = 0
    end_ts: int | None = None  # last possible event time; default now
    span_days: float = 730.0
    p_jump: float = 0.45  # an event starts from a fresh item rather than the successor of the last one
    p_drift: float = 0.08  # per event, the user's current interest moves one step along the ring
    zipf: float = 1.15  # popularity exponent: weight of the item ranked r is 1 / r**zipf


@dataclass(frozen=True)
class Catalogue:
    n_cats: int
    primary: np.ndarray  # [M] genre index of each item
    quality: np.ndarray  # [M] rating offset of each item
    order: np.ndarray  # [M] item ids grouped by genre, each group in series order
    start: np.ndarray  # [C] first position of each genre in `order`
    size: np.ndarray  # [C] items of each genre
    key: np.ndarray  # [M] genre + cumulative popularity share within it, in (c, c+1]


def make_catalogue(cfg: DemoConfig, rng: np.random.Generator) -> tuple[Catalogue, ItemColumns]:
    m, c = cfg.items, min(len(GENRES), cfg.items)
    genre_weight = rng.dirichlet(np.full(c, 1.5))  # [C]
    primary = np.concatenate([np.arange(c), rng.choice(c, m - c, p=genre_weight)])  # every genre has an item
    popularity = 1.0 / (rng.permutation(m) + 1.0) ** cfg.zipf  # [M]
    log_pop = np.log(popularity)
    quality = rng.normal(0.0, 0.35, m) + 0.15 * (log_pop - log_pop.mean()) / log_pop.std()
    order = np.lexsort((rng.random(m), primary))  # [M] series order within each genre is random
    size = np.bincount(primary, minlength=c)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    weight = popularity[order]  # [M] in series order
    within = _segment_cumsum(weight, start, size) / np.repeat(np.add.reduceat(weight, start), size)
    key = primary[order] + within
    catalogue = Catalogue(c, primary, quality, order, start, size, key)

    # A second genre: usually a ring neighbour, sometimes any other genre.
    neighbour = (primary + rng.choice([-1, 1], m)) % c
    second = np.where(rng.random(m) < 0.15, rng.integers(0, c, m), neighbour)
    has_second = (rng.random(m) < 0.7) & (second != primary)
    names = np.asarray(GENRES[:c])
    end_year = datetime.fromtimestamp(_end(cfg), UTC).year
    year = np.clip(end_year - np.floor(rng.exponential(12.0, m)), 1930, end_year).astype(int)
    titles = _join(rng.choice(ADJECTIVES, m), " ", rng.choice(NOUNS, m), " (", year.astype(str), ")")
    columns = ItemColumns(_ids("i", m), titles, names[primary], np.where(has_second, names[second], ""), year)
    return catalogue, columns


@dataclass(frozen=True)
class ItemColumns:
    """The demo catalogue as arrays: what the database load writes (as JSON text) and ``frame`` shows."""

    item_id: np.ndarray  # [M] str
    title: np.ndarray  # [M] str
    genre: np.ndarray  # [M] str, the primary genre
    second: np.ndarray  # [M] str, the second genre or ""
    year: np.ndarray  # [M] int

    def json(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """external_id, title, categories and attributes of the rows as the bulk upsert takes them (JSON text)."""
        tail = np.where(self.second[rows] == "", "", _join('", "', self.second[rows]))
        return {
            "external_id": self.item_id[rows],
            "title": self.title[rows],
            "categories": _join('["', self.genre[rows], tail, '"]'),
            "attributes": _join('{"year": ', self.year[rows].astype(str), "}"),
        }

    def frame(self) -> pd.DataFrame:
        """item_id, title, categories (list), attributes (dict): the frame ``Loader.items`` takes."""
        return pd.DataFrame(
            {
                "item_id": self.item_id,
                "title": self.title,
                "categories": [[g, s] if s else [g] for g, s in zip(self.genre, self.second, strict=True)],
                "attributes": [{"year": int(y)} for y in self.year],
            }
        )


@dataclass(frozen=True)
class UserColumns:
    """The demo users as arrays: attributes as JSON text for the database load, or as dicts in ``frame``."""

    user_id: np.ndarray  # [N] str
    age: np.ndarray  # [N] int
    country: np.ndarray  # [N] str

    def json(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        return {
            "external_id": self.user_id[rows],
            "attributes": _join('{"age": ', self.age[rows].astype(str), ', "country": "', self.country[rows], '"}'),
        }

    def frame(self) -> pd.DataFrame:
        attributes = [{"age": int(a), "country": str(k)} for a, k in zip(self.age, self.country, strict=True)]
        return pd.DataFrame({"user_id": self.user_id, "attributes": attributes})


def _join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise concatenation of string arrays (and constants)."""
    out = np.asarray(parts[0])
    for part in parts[1:]:
        out = np.char.add(out, part)
    return out


def _slices(n: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


def _ids(prefix: str, n: int) -> np.ndarray:
    """[n] external ids prefix1 .. prefixn: the internal index k is id prefix(k+1)."""
    return np.char.add(prefix, np.arange(1, n + 1).astype(str))


@dataclass(frozen=True)
class Population:
    home: np.ndarray  # [N] home genre
    taste: np.ndarray  # [N, C] how often each genre is picked, rows sum to 1
    liking: np.ndarray  # [N, C] how much each genre is liked (taste before heavy users widen it)
    bias: np.ndarray  # [N] rating offset
    counts: np.ndarray  # [N] events per user
    first_ts: np.ndarray  # [N] time of the first event
    gap: np.ndarray  # [N] mean seconds between events


def make_population(cfg: DemoConfig, cat: Catalogue, rng: np.random.Generator) -> tuple[Population, UserColumns]:
    n, c = cfg.users, cat.n_cats
    home = rng.integers(0, c, n)
    taste = 0.35 * rng.dirichlet(np.full(c, 0.3), n)  # [N, C]
    rows = np.arange(n)
    taste[rows, home] += 0.45
    taste[rows, (home + 1) % c] += 0.1
    taste[rows, (home - 1) % c] += 0.1
    taste /= taste.sum(1, keepdims=True)
    activity = rng.lognormal(0.0, 1.0, n)
    floor = max(0, min(5, cfg.events // max(n, 1)))
    counts = floor + rng.multinomial(cfg.events - floor * n, activity / activity.sum())
    # Heavy users range wider, as in real logs; it also leaves them enough distinct items to rate.
    breadth = np.minimum(0.7, counts / (3.0 * cfg.items / c))  # [N]
    picks = (1.0 - breadth)[:, None] * taste + breadth[:, None] / c
    end, span = _end(cfg), cfg.span_days * 86_400
    first_ts = end - span * rng.random(n)
    gap = rng.lognormal(np.log(6 * 3600), 1.0, n)
    ages, countries = np.clip(rng.normal(34, 11, n), 16, 80).astype(int), rng.choice(COUNTRIES, n)
    users = UserColumns(_ids("u", n), ages, countries)
    return Population(home, picks, taste, rng.normal(0.0, 0.35, n), counts, first_ts, gap), users


def _end(cfg: DemoConfig) -> int:
    return cfg.end_ts if cfg.end_ts is not None else int(time.time()) - 3600


def _segment_cumsum(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each segment; segments are contiguous and non-empty."""
    total = np.cumsum(values)
    return total - np.repeat(total[starts] - values[starts], lengths)


@dataclass(frozen=True)
class EventCodes:
    """A block of events as integer codes: index k is user u(k+1) / item i(k+1)."""

    user: np.ndarray  # [E] int64 user index
    item: np.ndarray  # [E] int64 item index
    value: np.ndarray  # [E] float64 rating on the half-star scale
    ts: np.ndarray  # [E] int64 Unix seconds


def event_codes(
    cfg: DemoConfig, cat: Catalogue, pop: Population, users: np.ndarray, rng: np.random.Generator
) -> EventCodes:
    """Events of the given users (ids with at least one event), time-ordered per user.

    Each user rates an item once: the walk is drawn OVERSAMPLE times longer than needed, and the
    first pop.counts events on distinct items are kept, so a user ends up with slightly fewer
    events only when their corner of the catalogue is exhausted.
    """
    wanted = pop.counts[users]  # [B]
    n = np.ceil(wanted * OVERSAMPLE).astype(np.int64) + 2  # [B]
    e = int(n.sum())
    uid = np.repeat(users, n)  # [E]
    starts = np.cumsum(n) - n  # [B]
    first = np.zeros(e, dtype=bool)
    first[starts] = True
    idx = np.arange(e)

    # Interest drifts along the genre ring.
    steps = rng.choice([-1, 0, 1], e, p=[cfg.p_drift / 2, 1 - cfg.p_drift, cfg.p_drift / 2])
    steps[first] = 0
    current = (pop.home[uid] + _segment_cumsum(steps, starts, n)) % cat.n_cats  # [E]

    # Fresh picks: the current interest or the overall taste, then an item by popularity within the genre.
    jump = first | (rng.random(e) < cfg.p_jump)
    j = np.flatnonzero(jump)
    by_taste = (np.cumsum(pop.taste[uid[j]], axis=1) < rng.random(j.size)[:, None]).sum(1)  # [J]
    genre = np.where(rng.random(j.size) < 0.3, np.minimum(by_taste, cat.n_cats - 1), current[j])
    picked = np.searchsorted(cat.key, genre + rng.random(j.size))
    picked = np.clip(picked, cat.start[genre], cat.start[genre] + cat.size[genre] - 1)  # [J] positions in order

    # Otherwise the successor of the previous item: the next position in the series.
    last = np.maximum.accumulate(np.where(jump, idx, 0))  # [E] most recent fresh pick
    pos_at_jump = np.zeros(e, dtype=np.int64)
    pos_at_jump[j] = picked
    anchor = pos_at_jump[last]
    g = cat.primary[cat.order[anchor]]
    item = cat.order[cat.start[g] + (anchor - cat.start[g] + idx - last) % cat.size[g]]  # [E]

    gaps = rng.exponential(1.0, e) * pop.gap[uid]
    gaps[first] = 0.0
    elapsed = _segment_cumsum(gaps, starts, n)
    room = (_end(cfg) - pop.first_ts[users]) / np.maximum(elapsed[starts + n - 1], 1.0)  # [B] squeeze into range
    ts = pop.first_ts[uid] + elapsed * np.minimum(1.0, room)[np.repeat(np.arange(users.size), n)]

    affinity = np.clip(np.log(pop.liking[uid, cat.primary[item]] * cat.n_cats), -2.5, 2.5)
    raw = 3.4 + 0.4 * affinity + cat.quality[item] + pop.bias[uid] + rng.normal(0.0, 0.5, e)

    first_visit = np.zeros(e, dtype=bool)
    first_visit[np.unique(uid.astype(np.int64) * cat.primary.size + item, return_index=True)[1]] = True
    rank = _segment_cumsum(first_visit.astype(np.int64), starts, n) - 1  # [E] index among distinct items
    keep = first_visit & (rank < np.repeat(wanted, n))
    return EventCodes(
        uid[keep].astype(np.int64),
        item[keep].astype(np.int64),
        np.clip(np.round(raw[keep] * 2) / 2, 0.5, 5.0),
        np.floor(ts[keep]).astype(np.int64),
    )


def generate_codes(
    cfg: DemoConfig, *, chunk_size: int = 100_000
) -> tuple[ItemColumns, UserColumns, Iterator[EventCodes]]:
    """(items, users, blocks of about chunk_size events as codes); the same config gives the same data."""
    rng = np.random.default_rng(cfg.seed)
    cat, items = make_catalogue(cfg, rng)
    pop, users = make_population(cfg, cat, rng)

    def blocks() -> Iterator[EventCodes]:
        active = np.flatnonzero(pop.counts > 0)
        bounds = np.searchsorted(np.cumsum(pop.counts[active]), np.arange(chunk_size, cfg.events, chunk_size))
        for block in np.split(active, np.unique(bounds + 1)):
            if block.size:
                yield event_codes(cfg, cat, pop, block, rng)

    return items, users, blocks()


def generate(
    cfg: DemoConfig, *, chunk_size: int = 100_000
) -> tuple[pd.DataFrame, pd.DataFrame, Iterator[pd.DataFrame]]:
    """(items, users, event chunks of about chunk_size rows) as frames with external ids."""
    items, users, blocks = generate_codes(cfg, chunk_size=chunk_size)

    def chunks() -> Iterator[pd.DataFrame]:
        for codes in blocks:
            yield pd.DataFrame(
                {
                    "user_id": users.user_id[codes.user],
                    "item_id": items.item_id[codes.item],
                    "type": "rating",
                    "value": codes.value,
                    "ts": codes.ts,
                }
            )

    return items.frame(), users.frame(), chunks()


def load_demo(
    cfg: DemoConfig, settings: Settings, sessions: sessionmaker[Session], *, chunk_size: int = 100_000
) -> ImportReport:
    """Write the catalogue, the users and the events; ids are resolved once, then events go as codes.

    Stores what ``Loader.items / users / events`` would store from ``generate``'s frames (the same
    ids, rows and order), without a string per event or a Python object per item.
    """
    lo, hi = max(0.5, settings.rating_min), min(5.0, settings.rating_max)
    items, users, blocks = generate_codes(cfg, chunk_size=chunk_size)
    loader = Loader(sessions)
    # JSON text is built UPSERT_CHUNK rows at a time: for 1M items it would otherwise hold 0.4 GB at once.
    item_ids = loader.item_columns(items.json(s) for s in _slices(cfg.items, UPSERT_CHUNK))  # [M] id of index k
    user_ids = loader.user_columns(users.json(s) for s in _slices(cfg.users, UPSERT_CHUNK))  # [N]
    loader.event_codes((user_ids[b.user], item_ids[b.item], np.clip(b.value, lo, hi), b.ts) for b in blocks)
    return loader.finish()
