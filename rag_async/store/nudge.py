"""Nudges: a worker hears that a job was put on its queue, and starts it now rather than at its
next poll of arq's queue.

The Lua that puts a job on arq's queue (queue.py's `arq_enqueue`) publishes on the queue's
channel (`Keys.nudge`) in the same step, and so do a webhook delivery queued and a running
job's abort. Each worker process holds one subscription to its lanes' channels, on a
connection of its own outside the pool's limit (`pool.pubsub_pool`), and sets the lane's
event, which cuts its poll's sleep short (worker/process.py). Every worker of the lane is
woken; arq's own locking decides which one takes the job.

A nudge is a hint, never the only road: one lost while the connection is down costs a poll
delay, as before nudges. A (re)subscription wakes every lane, for what was published
meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from rag_async.store.keys import Keys
from rag_async.store.pool import pubsub_pool
from rag_async.store.queue import Lane

log = structlog.get_logger(__name__)

# Seconds between attempts to subscribe again while Valkey is away.
RETRY = 0.5


class NudgeListener:
    """One process's subscription to the nudges of its lanes: `wakes` maps each lane to the
    event its worker waits on between polls."""

    def __init__(self, redis: Redis, keys: Keys, wakes: Mapping[Lane, asyncio.Event]) -> None:
        self._lanes = {keys.nudge(lane): wake for lane, wake in wakes.items()}
        self._pool = pubsub_pool(redis)
        self._pubsub = PubSub(self._pool)
        self._reader: asyncio.Task[None] | None = None
        # Set once every channel is subscribed (tests wait on it); cleared when lost.
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="nudge-listener")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._pool.aclose()

    async def _read_forever(self) -> None:
        """Subscribes, then reads until cancelled; any failure starts over on a new connection
        (the polls go on meanwhile)."""
        lost = False
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(*self._lanes)
                message = await self._pubsub.get_message(timeout=None)
                if lost:
                    lost = False
                    log.info("nudge subscription re-established")
                if message is not None:
                    self._dispatch(message)
            except Exception as error:  # a lost connection, or one in an unknown state
                if not lost:
                    log.warning("nudge subscription lost; polling meanwhile", error=str(error))
                lost = True
                self.subscribed.clear()
                await self._reset()
                await asyncio.sleep(RETRY)

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind in (b"subscribe", "subscribe"):
            # A (re)subscription, ours or redis-py's own after a reconnect: what was published
            # while the connection was away is lost, so every lane polls once now.
            for wake in self._lanes.values():
                wake.set()
            if len(self._pubsub.channels) == len(self._lanes):
                self.subscribed.set()
        elif kind in (b"message", "message") and channel in self._lanes:
            self._lanes[channel].set()

    async def _reset(self) -> None:
        """Drops the connection and forgets the subscriptions; the next round subscribes on a
        new connection."""
        with contextlib.suppress(Exception):
            await self._pubsub.reset()
        self._pubsub = PubSub(self._pool)
