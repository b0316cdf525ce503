"""A cache of whole answers of the GET list endpoints (recommendations, next items, similar items), in
front of FastAPI: a repeated request is answered from memory on the event loop, without routing,
parameter validation, the thread hop, the history query, the pipeline or serialisation. Why it exists and
what it costs: docs/decisions/002-response-cache.md.

An answer is kept under its exact path and query string with what it was computed from, taken before it
was computed (``Ticket.begin``, in the serving thread): the loaded model versions, the catalogue's item
generation, and the change feed's sequence number (``app.serving.changes``). It is served again only while
all three still hold: the same versions, no item written, and no event of that user committed since, which
the feed tells without a query (after a commit: one scan of the new events, in a thread). Popular-item
answers move with every event of anyone and are not kept. Off when DEEPREC_RESPONSE_CACHE_MB is 0 and on
PostgreSQL (no change feed there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import anyio
from cachetools import LRUCache
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.access import GRANTED, denial
from app.serving.catalogue import CatalogueKeeper
from app.serving.changes import ChangeFeed
from app.serving.metrics import RESPONSE_CACHE, RESPONSE_CACHE_ENTRIES
from app.serving.registry import ModelRegistry

TICKET = "deeprec.response_cache"  # the request scope's key for the Ticket a route fills
_PATHS = re.compile(r"^/v1/(?:users/([^/]+)/(?:recommendations|next-items)|items/[^/]+/similar)$")
_OVERHEAD = 512  # bytes an entry costs beside its body: key, headers, the entry itself


@dataclass
class Ticket:
    """What an answer depends on, recorded by the route before the pipeline reads anything; ``keep`` says
    whether the answer may be reused (not a popular-items list)."""

    user: str | None
    feed: ChangeFeed
    registry: ModelRegistry
    catalogue: CatalogueKeeper
    seq: int = -1
    models: tuple[tuple[str, str], ...] | None = None
    items: int = -1
    keep: bool = False

    def begin(self) -> None:
        """In the serving thread, before the answer is computed (``sync`` may read the database)."""
        self.seq = self.feed.sync() if self.user is not None else 0
        self.models = self.registry.models.token if self.registry.ready else None
        self.items = self.catalogue.current().item_generation if self.catalogue.ready else -1


@dataclass(frozen=True)
class Answer:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    route: Any  # the matched route, so request metrics label a cached answer like a computed one
    made: Ticket  # what it was computed from


class ResponseCache:
    """ASGI middleware, innermost of ours (the key and query checks run first). Every look-up and store
    happens on the event loop, so the LRU needs no lock."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATHS.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        state = scope["app"].state
        cache: LRUCache[Any, Answer] | None = getattr(state, "response_cache", None) if match else None
        if match is None or cache is None or denial(scope.get(GRANTED, "read"), "read") is not None:
            await self.app(scope, receive, send)  # a key below read: the route's own check answers
            return
        user = match.group(1)
        feed: ChangeFeed = state.changes
        registry: ModelRegistry = state.registry
        catalogue: CatalogueKeeper = state.catalogue
        key = (scope["path"], scope["query_string"])
        answer = cache.get(key)
        if answer is not None and user is not None and not feed.current():
            await anyio.to_thread.run_sync(feed.sync)  # something was committed: whose events, off the loop
        if answer is not None and self._valid(answer, feed, registry, catalogue):
            RESPONSE_CACHE.labels("hit").inc()
            scope["route"] = answer.route
            await send({"type": "http.response.start", "status": 200, "headers": list(answer.headers)})
            await send({"type": "http.response.body", "body": answer.body})
            return
        RESPONSE_CACHE.labels("miss").inc()
        ticket = scope[TICKET] = Ticket(user, feed, registry, catalogue)
        sent: dict[str, Any] = {"status": None, "headers": [], "complete": False}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":  # copied before outer middlewares add their headers
                sent.update(status=message["status"], headers=list(message.get("headers", [])))
            elif message["type"] == "http.response.body" and sent["status"] == 200:
                chunks.append(message.get("body", b""))
                sent["complete"] = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, capture)
        if sent["complete"] and ticket.keep and ticket.models is not None and ticket.items >= 0:
            cache[key] = Answer(sent["headers"], b"".join(chunks), scope.get("route"), ticket)
            RESPONSE_CACHE_ENTRIES.set(len(cache))

    @staticmethod
    def _valid(answer: Answer, feed: ChangeFeed, registry: ModelRegistry, catalogue: CatalogueKeeper) -> bool:
        made = answer.made
        if not (registry.ready and catalogue.ready) or made.models != registry.models.token:
            return False
        if made.items != catalogue.current().item_generation:
            return False
        return made.user is None or (feed.current() and feed.changed_at(made.user) <= made.seq)


def make_cache(max_bytes: int) -> LRUCache[Any, Answer] | None:
    """The LRU of answers, bounded by bytes; None when ``max_bytes`` is 0 (off)."""
    if max_bytes <= 0:
        return None
    return LRUCache(maxsize=max_bytes, getsizeof=lambda a: len(a.body) + _OVERHEAD)
