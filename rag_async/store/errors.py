"""The store's failures as the rest of the service handles them, and a plain reachability
check, so that no module outside the store needs redis itself."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Valkey cannot be reached right now (down, restarting, a network away): worth a retry soon.
StoreUnreachable = (RedisConnectionError, RedisTimeoutError)
# Valkey refuses writes at its maxmemory (noeviction).
StoreOutOfMemory = OutOfMemoryError
# Any failure of a call to Valkey.
StoreError = RedisError


def ping(
    url: str | None = None, *, port: int = 0, password: str | None = None, timeout: float
) -> None:
    """PING a server by URL, or on loopback by port; raises `StoreError` or `OSError` (and
    `ValueError` for a malformed URL) when it does not answer."""
    if url is not None:
        client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    else:
        client = Redis(
            "127.0.0.1",
            port,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
    try:
        client.ping()
    finally:
        client.close()
