"""One Settings object for the whole service, read from DEEPREC_* environment variables."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SCOPES = ("read", "write", "admin")  # each includes the ones before it


class Settings(BaseSettings):
    # env_ignore_empty: DEEPREC_X= (as compose writes an unset ${VAR:-}) means "use the default".
    model_config = SettingsConfigDict(env_prefix="DEEPREC_", env_file=".env", extra="ignore", env_ignore_empty=True)

    database_url: str = Field(
        default="sqlite:///./var/deeprec.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user@host/db",
    )
    models_dir: Path = Field(default=Path("models_store"), description="Root of the versioned model store")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where models are loaded")
    api_key: str | None = Field(
        default=None, description="An admin key: when set (or DEEPREC_API_KEYS is), every /v1 route needs X-API-Key"
    )
    api_keys: str | None = Field(
        default=None,
        description="Scoped keys as comma-separated scope:key pairs, e.g. read:k1,write:k2,admin:k3 "
        "(admin: everything; write: ingest and reads; read: reads and recommendations)",
    )
    max_body_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Largest request body accepted (413 above it, before reading it); default 512 bytes "
        "per DEEPREC_MAX_BATCH event, about twice what such a batch takes",
    )
    open_docs: bool = Field(default=True, description="/docs, /redoc and /openapi.json need no key; false: a read key")
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics without a key on this port of DEEPREC_METRICS_HOST; unset: only on the API "
        "port, behind a read key",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address the DEEPREC_METRICS_PORT server binds")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="SQLite durability: NORMAL (WAL; a commit acknowledged just before a power loss can be lost) "
        "or FULL (every commit synced to disk, slower writes)",
    )
    rating_min: float = Field(default=0.5, description="Lowest accepted rating")
    rating_max: float = Field(default=5.0, description="Highest accepted rating")
    log_level: str = Field(default="INFO", description="Python logging level")
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log lines as JSON objects (one per line) or as text with key=value fields"
    )
    max_batch: int = Field(default=10_000, description="Most events or items accepted in one request")
    future_tolerance_s: int = Field(
        default=86_400, description="How far in the future an event timestamp may lie, in seconds"
    )
    torch_threads: int = Field(
        default=1, description="torch intra-op threads in the API process (1 is lowest latency on small CPUs)"
    )
    recommendation_cache_size: int = Field(
        default=4096,
        ge=0,
        description="Most users' ranked candidates kept per API process for reuse until their events or the models "
        "change (a few kB each); 0 turns the cache off",
    )
    recommendation_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory bound of that cache per API process, in MiB: the least recently used lists go first "
        "when either bound is reached",
    )
    response_cache_mb: int = Field(
        default=64,
        ge=0,
        description="Memory bound, in MiB per API process, of the cache of whole answers of the GET recommendation, "
        "next-items and similar-items requests, answered again from memory until the user's events, the items or "
        "the models change (docs/decisions/002-response-cache.md); 0 turns it off. SQLite only: on PostgreSQL "
        "every request reads the user's history",
    )
    gc_freeze: bool = Field(
        default=True,
        description="After the models load or a new version is swapped in, collect garbage once and leave the "
        "surviving objects out of later collections (gc.freeze): without it a full collection of them stalls "
        "the process (~180 ms) every few thousand requests",
    )
    serving_concurrency: int = Field(
        default=1,
        ge=1,
        description="Requests one API process computes at once; the others wait on its event loop "
        "(on the CPU, more than one per core only adds GIL hand-offs)",
    )
    catalogue_refresh_s: float = Field(
        default=1.0,
        gt=0,
        description="How often each API process brings its catalogue (active flags, categories, popularity) up to "
        "date, in a background thread: new events are counted, items read again only after item writes",
    )
    ann_min_items: int = Field(
        default=50_000,
        ge=1,
        description="Catalogue size from which a saved model version gets approximate nearest-neighbour indexes "
        "and serving retrieves candidates from them (two-stage: retrieval, then ranking of the candidates); "
        "below it every item is ranked exactly, which is faster and exact there",
    )
    retrieval_depth: int = Field(
        default=200,
        ge=10,
        le=10_000,
        description="Candidates each retriever (an ANN index, popular items) gives the ranking stage per request "
        "on a large catalogue; widened up to 16 times when filters leave too few",
    )
    similar_depth: int = Field(
        default=2000,
        ge=10,
        le=100_000,
        description="Candidates the similar-items index search returns (its HNSW search depth) before they are "
        "re-scored exactly: item to item has no ranking stage, so the search itself must go deep "
        "(recall@10 0.96 at 1M items, BENCHMARKS.md 'Scale')",
    )
    train_threads: int = Field(default=0, description="torch threads for training; 0 means all cores")
    embedded_worker: bool = Field(default=True, description="deeprec serve also starts one worker process")
    migrate_on_start: bool = Field(default=True, description="Apply migrations when the service starts")
    keep_versions: int = Field(default=5, description="Versions kept per model; older ones are pruned")
    promotion_tolerance: float = Field(
        default=0.0, description="A new version is promoted if its validation metric is at most this much worse"
    )
    model_poll_interval_s: float = Field(default=2.0, description="How often the API looks for new active versions")
    job_heartbeat_s: float = Field(default=5.0, description="Worker heartbeat period")
    job_stale_after_s: float = Field(default=60.0, description="A running job without heartbeat this long is dead")
    job_max_attempts: int = Field(default=2, description="Attempts before a job whose worker died is failed")
    retrain_interval: float | None = Field(default=None, description="Retrain every this many seconds")
    retrain_min_new_events: int | None = Field(
        default=None, description="Retrain once this many new interactions have arrived"
    )

    @model_validator(mode="after")
    def _check_scale(self) -> Settings:
        if self.rating_min >= self.rating_max:
            raise ValueError("DEEPREC_RATING_MIN must be below DEEPREC_RATING_MAX")
        self.key_scopes()  # a malformed DEEPREC_API_KEYS fails at start, not at the first request
        return self

    def key_scopes(self) -> dict[str, str]:
        """key -> scope for every configured key; DEEPREC_API_KEY is an admin key. Empty: no key is needed."""
        out: dict[str, str] = {}
        pairs = [("admin", self.api_key)] if self.api_key else []
        for part in (self.api_keys or "").split(","):
            if part.strip():
                scope, sep, key = part.strip().partition(":")
                if not sep or scope.strip() not in SCOPES or not key.strip():
                    raise ValueError(f"DEEPREC_API_KEYS: expected scope:key with scope one of {SCOPES}, got {part!r}")
                pairs.append((scope.strip(), key.strip()))
        for scope, key in pairs:
            if out.get(key, scope) != scope:
                raise ValueError("DEEPREC_API_KEYS: one key is given two scopes")
            out[key] = scope
        return out

    @property
    def body_limit(self) -> int:
        return self.max_body_bytes or max(1 << 20, 512 * self.max_batch)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


# Read by the test suite and the benchmarks only; listed in the reference with the settings.
TEST_VARIABLES = (
    ("DEEPREC_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test",
     "PostgreSQL server for the test suite; each run gets its own schema, dropped afterwards"),
    ("DEEPREC_ML100K_DIR", "../shared/data/ml-100k", "MovieLens 100K folder (never copied into the repository)"),
    ("CI", "unset", "When set, the test suite fails instead of skipping if PostgreSQL does not answer"),
)  # fmt: skip
SECRET = "***"


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def reference_markdown() -> str:
    """docs/configuration.md: every setting with its default and meaning, from the Settings fields
    (``deeprec settings --markdown`` writes it; a test keeps the file equal to it)."""
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable with the `DEEPREC_` prefix (or a line in `.env`), read by",
        "`app/config.py`; `deeprec serve` and every other command read the same settings. `deeprec settings`",
        "prints the values in effect (keys and passwords masked). This file is written by",
        "`deeprec settings --markdown > docs/configuration.md`.",
        "",
        "| Variable | Default | Meaning |",
        "|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        text = " ".join((info.description or "").split())
        lines.append(f"| `DEEPREC_{name.upper()}` | `{_shown(info.default)}` | {text} |")
    lines += ["", "Read by tests and benchmarks only:", "", "| Variable | Default | Meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{default}` | {text} |" for name, default, text in TEST_VARIABLES]
    return "\n".join(lines) + "\n"


def effective(settings: Settings) -> list[tuple[str, str]]:
    """(variable, value in effect) for every setting; API keys and a database password are masked."""
    out = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in ("api_key", "api_keys") and value:
            shown = SECRET
        elif name == "database_url":
            shown = re.sub(r"(://[^:/@]+:)[^@]*@", rf"\1{SECRET}@", value)
        else:
            shown = _shown(value)
        out.append((f"DEEPREC_{name.upper()}", shown))
    return out


@lru_cache
def get_settings() -> Settings:
    return Settings()
