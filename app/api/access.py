"""Scoped API keys (read < write < admin, each including the ones before it). A route states its scope with
a ``Requires`` dependency; ``app.api.guard`` checks the key is valid before the body is read, ``Requires``
checks its scope."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from app.config import SCOPES

RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
GRANTED = "deeprec.api_scope"  # the request scope's key for the scope the guard granted
KEY_HEADER = "X-API-Key"

KEY_DOC = (
    "Needed on every /v1 route when DEEPREC_API_KEY or DEEPREC_API_KEYS is set: a read key for reads and "
    "recommendations, a write key for ingest, an admin key for training, jobs and versions"
)


class Keyring:
    """The configured keys, compared in constant time: every key is compared on every call."""

    def __init__(self, key_scopes: dict[str, str]) -> None:
        self._keys = [(hashlib.sha256(key.encode()).digest(), scope) for key, scope in key_scopes.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def scope_of(self, key: bytes | None) -> str | None:
        if key is None:
            return None
        digest = hashlib.sha256(key).digest()  # equal lengths: compare_digest then takes the same time
        found = None
        for known, scope in self._keys:
            if hmac.compare_digest(known, digest):
                found = scope
        return found


def denial(granted: str | None, needed: str) -> HTTPException | None:
    """401 without a valid key, 403 with a key whose scope is below ``needed``, None when allowed."""
    if granted is None:
        return HTTPException(401, f"missing or invalid {KEY_HEADER} header", headers={"WWW-Authenticate": "APIKey"})
    if RANK[granted] < RANK[needed]:
        return HTTPException(403, f"this key's scope is {granted!r}; this route needs {needed!r}")
    return None


class Requires(APIKeyHeader):
    """The scope a route needs, as one dependency that is also the X-API-Key security scheme of the
    OpenAPI document. The guard has checked that the key is valid; this checks its scope (403)."""

    def __init__(self, scope: str) -> None:
        assert scope in RANK
        super().__init__(name=KEY_HEADER, auto_error=False, scheme_name="APIKeyHeader", description=KEY_DOC)
        self.scope = scope

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        keyring: Keyring = request.app.state.keyring
        if not keyring.enabled:
            return
        granted = request.scope.get(GRANTED)
        if granted is None:  # not through the guard (an app without it): check the key here
            key = request.headers.get(KEY_HEADER)
            granted = keyring.scope_of(None if key is None else key.encode("latin-1", "replace"))
        error = denial(granted, self.scope)
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"Requires({self.scope!r})"


ReadAccess = Depends(Requires("read"))
WriteAccess = Depends(Requires("write"))
AdminAccess = Depends(Requires("admin"))
