"""The one way a process connects to Redis/Valkey: a bounded pool whose callers wait for a
free connection instead of failing, speaking arq's JSON job format (never pickle)."""

from __future__ import annotations

import orjson
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rag_async.config import Settings
from rag_async.store.keys import Keys

# Errors after which a worker's command is sent again: lost or refused connections.
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

# A process's client of the store, as `connect_redis` makes it: what the stores are built on.
Connection = Redis

# A pooled connection idle for longer than this (seconds) is PINGed before its next command
# (never the pub/sub connection: see `pubsub_pool`).
HEALTH_CHECK_INTERVAL = 30.0


def outage_retry() -> Retry:
    """Up to 15 resends, 50 ms apart doubling to 1 s: about 11 s in all."""
    # redis-py types supported_errors as RedisError subclasses; it catches any it is given.
    return Retry(
        ExponentialBackoff(cap=1.0, base=0.05),
        15,
        supported_errors=OUTAGE_ERRORS,  # type: ignore[arg-type]
    )


def arq_cli_settings(url: str) -> RedisSettings:
    """For arq's CLI, which builds its own pool: the same resends as `connect_redis`'s."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 0  # the resends cover the first connect too
    settings.retry_on_error = list(OUTAGE_ERRORS)
    settings.retry = outage_retry()
    return settings


def connect_redis(settings: Settings, *, client_name: str, ride_out_outages: bool) -> ArqRedis:
    """A pool of at most `RAG_REDIS_MAX_CONNECTIONS` connections.

    `ride_out_outages` is for workers: a command that meets a lost connection, or cannot
    connect, waits and is sent again for about 11 s in all, so a Valkey restart holds jobs up
    for a moment instead of failing them. Resending is safe: event appends carry a write id
    (eventlog.py), the rest are idempotent writes. The API fails fast instead and answers 503.
    """
    if not settings.redis_url:
        raise ValueError("RAG_REDIS_URL is not set: a Redis/Valkey server is needed")
    options: dict[str, object] = {}
    if ride_out_outages:
        options = {"retry_on_error": list(OUTAGE_ERRORS), "retry": outage_retry()}
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        # Wait this long for a free connection; a worker's jobs may all want one at once.
        timeout=30 if ride_out_outages else 5,
        socket_connect_timeout=2,
        health_check_interval=HEALTH_CHECK_INTERVAL,
        client_name=client_name,  # so CLIENT LIST tells the API's connections from workers'
        **options,
    )
    return ArqRedis(
        pool,
        job_serializer=orjson.dumps,
        job_deserializer=orjson.loads,
        default_queue_name=Keys(settings.key_prefix).queue("questions"),
    )


def pubsub_pool(redis: Redis) -> ConnectionPool:
    """A pool of one connection to `redis`'s server, with its options but no health check: for
    a pub/sub connection that a reader task is always reading (eventlog.LiveHub).

    redis-py's health check PINGs a connection idle for `health_check_interval` before the next
    command, and reads the reply in the task sending that command. A SUBSCRIBE sent while the
    reader waits on the socket then makes a second read, which asyncio refuses: the SUBSCRIBE
    fails and the connection is dropped. The check would not watch a silent pub/sub connection
    anyway: it runs only before a command or a read, and the reader blocks in one read.
    """
    shared = redis.connection_pool
    options = {**shared.connection_kwargs, "health_check_interval": 0}
    return ConnectionPool(connection_class=shared.connection_class, max_connections=1, **options)
