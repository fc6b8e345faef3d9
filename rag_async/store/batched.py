"""Calls of one Lua script that many tasks make at once, sent together: one round trip.

A worker runs many jobs at once, and each tells its story in event appends (events.py). Each
call alone is a round trip: a send and a receive syscall and redis-py's work around them,
more of the worker's CPU than the script costs Valkey. The calls made within one turn of the
event loop are sent as one pipeline instead (not a transaction: each call is its own atomic
step, as before), and each caller gets its own call's result or error.

What a lost connection does is unchanged: the pool's retry sends the whole pipeline again, as
it would have sent each call again, so a script sent this way must be safe to repeat (the
event log's write ids make it so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

Keys = Sequence[str]
Args = Sequence[str | int | float | bytes]
Call = tuple[Keys, Args, "asyncio.Future[Any]"]


class BatchedScript:
    """`await script(keys, args)`, sent with the other calls of the same loop turn."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._redis = redis
        self._script = redis.register_script(source)
        self._pending: list[Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # held, so none is collected midway

    async def __call__(self, keys: Keys, args: Args) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        if len(self._pending) == 1:  # the first of this turn: send them all at the next
            task = asyncio.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future

    async def _send(self) -> None:
        calls, self._pending = self._pending, []
        try:
            if len(calls) == 1:  # alone: a pipeline would only add its own work
                results: list[Any] = [await self._script(keys=calls[0][0], args=calls[0][1])]
            else:
                results = await self._pipeline(calls)
        except asyncio.CancelledError:
            for *_, future in calls:
                future.cancel()
            raise
        except Exception as error:
            for *_, future in calls:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), result in zip(calls, results, strict=True):
            if future.done():
                continue  # its caller was cancelled meanwhile
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        results = await self._execute(calls)
        unknown = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if unknown:  # Valkey restarted, or flushed its scripts: none of those calls ran
            await self._redis.script_load(self._script.script)
            again = await self._execute([calls[i] for i in unknown])
            for i, result in zip(unknown, again, strict=True):
                results[i] = result
        return results

    async def _execute(self, calls: list[Call]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys, args, _ in calls:
                # redis-py types these arguments str; it encodes numbers and bytes alike.
                pipe.evalsha(self._script.sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results
