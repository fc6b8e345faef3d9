"""Secrets the service makes for itself: random bytes, made once per Valkey database
(`Keys.secret`), so that every API process agrees on them and they outlive restarts with the
data (Valkey never evicts: `noeviction`). Nothing to configure, and nothing to leak from a
setting; only who can read Valkey can read them, and Valkey holds the data they guard anyway.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from rag_async.store.keys import Keys

_BYTES = 32


class ServerSecrets:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._known: dict[str, bytes] = {}

    async def get(self, name: str) -> bytes:
        """The secret `name`: made now if no process made it before (SET NX GET: the first
        writer's wins, in one round trip), then kept in memory."""
        known = self._known.get(name)
        if known is None:
            made = secrets.token_bytes(_BYTES)
            before: bytes | None = await self._redis.set(
                self._keys.secret(name), made, nx=True, get=True
            )
            known = self._known[name] = made if before is None else before
        return known
