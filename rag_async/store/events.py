"""A job's events in Redis: durable append and replay, and live delivery.

Each event is appended to a per-job Stream whose entry ids are `0-1`, `0-2`, ... so the stream
id *is* the event id, and announced on the job's pub/sub channel, in one Lua call (one round
trip, atomic, and the id is assigned by Redis, so two writers can never reuse one). The same
call can update fields of the job record, so `/job-status` and the stream never disagree.

An API process holds ONE pub/sub connection for all its SSE clients (`LiveHub`); a client first
subscribes, then replays the log after its Last-Event-ID, then follows live, skipping what it
has seen and re-reading the log whenever it notices a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rag_async.domain.events import StatusEvent, _Event, decode_event, encode_event
from rag_async.domain.job import JobRecord, JobStatus
from rag_async.domain.transcript import Transcript
from rag_async.store.batched import BatchedScript
from rag_async.store.ending import LUA as ENDING_LUA
from rag_async.store.keys import Keys
from rag_async.store.pool import pubsub_pool
from rag_async.store.queue import TAKE_OFF_LUA, Kind, take_off_keys
from rag_async.store.results import LUA as RESULTS_LUA

log = structlog.get_logger(__name__)

# Appending events, as a Lua function (`LUA`) that this module's scripts compose. `k`: the
# job hash, its event stream, its live channel; `payloads`: the events, in order (one, or a few
# that follow one another at once: one step, one round trip); `fields`: field/value pairs for
# the record. The seq counter lives in the job record so a retried attempt continues numbering.
# - The attempt is a fence: once a newer attempt of the job has started (its worker was taken
#   for dead, recovery.py), the older one may write no more ('0': no fence).
# - The write id makes a resent append harmless: a client that lost the reply (Valkey restarted,
#   the connection dropped) sends the same call again, and it must not log the events twice.
# - What it writes waits in the record to be counted toward its owner's result bytes when the
#   job ends (results.py): one command an append, where counting each into the owner's sum
#   would cost several.
# Returns the last event's id (0: superseded) and whether they were logged now (not a repeat).
LUA = (
    RESULTS_LUA
    + """
local function events_append(k, payloads, ttl, attempt, write_id, fields)
  if attempt ~= '0' and redis.call('HGET', k[1], 'attempt') ~= attempt then
    return 0, false
  end
  if write_id ~= '' then
    if redis.call('HGET', k[1], 'last_write') == write_id then
      return tonumber(redis.call('HGET', k[1], 'seq')), false
    end
    redis.call('HSET', k[1], 'last_write', write_id)
  end
  local n = 0
  local bytes = 0
  for _, payload in ipairs(payloads) do
    n = redis.call('HINCRBY', k[1], 'seq', 1)
    redis.call('XADD', k[2], '0-' .. n, 'e', payload)
    redis.call('PUBLISH', k[3], n .. ' ' .. payload)
    bytes = bytes + string.len(payload)
  end
  if #fields > 0 then
    redis.call('HSET', k[1], unpack(fields))
  end
  redis.call('EXPIRE', k[2], ttl)
  for i = 2, #fields, 2 do bytes = bytes + string.len(fields[i]) end
  results_pending(k[1], bytes)
  return n, true
end
"""
)

# KEYS: job hash, event stream, live channel, the ending set (ending.py). ARGV: ttl, the
# writer's attempt ('0' for none), a write id ('' for none), the job id if the events end the
# job ('' if not), how many events, the events, then field/value pairs for the job record. Events
# that end the job enter its end in the ending set in the same step: no process can die in
# between. A job that has ended (its outcome written, until a requeue clears it) is not ended
# again: one end, one outcome counted (but for a resend of the very write that ended it).
_APPEND = (
    LUA
    + ENDING_LUA
    + """
if ARGV[4] ~= '' then
  local outcome = redis.call('HGET', KEYS[1], 'outcome')
  if outcome and outcome ~= '' and redis.call('HGET', KEYS[1], 'last_write') ~= ARGV[3] then
    return 0
  end
end
local count = tonumber(ARGV[5])
local n, logged = events_append({KEYS[1], KEYS[2], KEYS[3]}, {unpack(ARGV, 6, 5 + count)},
  ARGV[1], ARGV[2], ARGV[3], {unpack(ARGV, 6 + count)})
if logged and ARGV[4] ~= '' then ending_add(KEYS[4], ARGV[4], n) end
return n
"""
)

# A queued job cancelled in one step: taken out of its waiting list or off arq's queue
# (queue.py), its `cancelled` event and record fields, its end in the ending set; or nothing at
# all, when a worker holds it, it is no longer queued, or it has ended (its outcome written).
# KEYS: job hash, event stream, live channel, the ending set, then `queue.take_off_keys` (to
# the end). ARGV: job id, payload, ttl, then field/value pairs. Returns the event's id, or 0.
_CANCEL_QUEUED = (
    LUA
    + ENDING_LUA
    + TAKE_OFF_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if outcome and outcome ~= '' then return 0 end
if not arq_take_off({unpack(KEYS, 5)}, ARGV[1]) then return 0 end
local n = events_append(
  {KEYS[1], KEYS[2], KEYS[3]}, {ARGV[2]}, ARGV[3], '0', '', {unpack(ARGV, 4)})
ending_add(KEYS[4], ARGV[1], n)
return n
"""
)


# An attempt started in the step that reads the job's record: the attempt counted and its first
# status event appended (fenced to it, write id '<attempt>:0'), unless the record is gone, the
# job has ended, or the record holds one of the fields that make the job ask first whether it
# must wait for another (`JobSpec.waits_on`): then the record alone, read as HGETALL reads it.
# KEYS: job hash, event stream, live channel. ARGV: 1 ttl, 2-3 the event's JSON before and
# after its attempt number, 4 the ending statuses, 5 the holding fields (each between spaces),
# then field/value pairs for the record. Returns the attempt's number (0: not started) and the
# record as it was before.
_BEGIN = (
    LUA
    + """
local raw = redis.call('HGETALL', KEYS[1])
local status, hold = nil, false
for i = 1, #raw, 2 do
  if raw[i] == 'status' then status = raw[i + 1] end
  if raw[i + 1] ~= '' and string.find(ARGV[5], ' ' .. raw[i] .. ' ', 1, true) then hold = true end
end
if not status or hold or string.find(ARGV[4], ' ' .. status .. ' ', 1, true) then
  return {0, raw}
end
local attempt = tostring(redis.call('HINCRBY', KEYS[1], 'attempt', 1))
events_append({KEYS[1], KEYS[2], KEYS[3]}, {ARGV[2] .. attempt .. ARGV[3]}, ARGV[1], attempt,
  attempt .. ':0', {unpack(ARGV, 6)})
return {tonumber(attempt), raw}
"""
)
_ENDED = " " + " ".join(status.value for status in JobStatus if status.ended) + " "


class Superseded(Exception):
    """A newer attempt of the job is running elsewhere: this one must stop without a word."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    data: bytes  # the encoded event, as `events.encode_event` made it


class EventLog:
    """Append and replay a job's events. Used by workers (append) and the API (replay)."""

    def __init__(self, redis: Redis, keys: Keys, ttl: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        # Appends of the jobs running at once share round trips (batched.py).
        self._append = BatchedScript(redis, _APPEND)
        self._cancel_queued = redis.register_script(_CANCEL_QUEUED)
        self._begin = redis.register_script(_BEGIN)

    async def append(
        self,
        job_id: str,
        event: _Event | Sequence[_Event],
        record: Mapping[str, str | int | float] | None = None,
        *,
        attempt: int = 0,
        write_id: str = "",
    ) -> int:
        """Append `event` (or several, in order, in one step) to the job's log, publish it,
        update `record` fields; return its id (the last one's).

        With `attempt`, only while that is still the job's latest attempt: else `Superseded`.
        With `write_id`, a repeat of the job's latest write is not appended again. An event
        whose `record` gives the job's `outcome` ends the job: its end enters the ending set
        (ending.py) in the same step, until its bookkeeping is done; a job that has ended
        already is not ended again (`Superseded`: its end is another's).
        """
        record = record or {}
        events = [event] if isinstance(event, _Event) else event
        ends = job_id if record.get("outcome") else ""
        args: list[str | int | float | bytes] = [self._ttl, attempt, write_id, ends, len(events)]
        args += [encode_event(one) for one in events]
        for field, value in record.items():
            args += [field, value]
        event_id = int(await self._append(self._script_keys(job_id), args))
        if event_id == 0:
            raise Superseded(f"job {job_id}: attempt {attempt} was superseded by a newer one")
        return event_id

    async def cancel_queued(
        self, job_id: str, kind: Kind, event: _Event, record: Mapping[str, str]
    ) -> int:
        """End a job that waits in its queue, in one step: taken off arq's queue, `event`
        logged with `record` (which gives the job's outcome), its end in the ending set.
        Returns the event's id; 0, having written nothing, if the job is not waiting there
        (a worker holds it, or it has ended)."""
        args: list[str | int | float | bytes] = [job_id, encode_event(event), self._ttl]
        for field, value in record.items():
            args += [field, value]
        keys = [*self._script_keys(job_id), *take_off_keys(self._keys, job_id, kind)]
        return int(await self._cancel_queued(keys=keys, args=args))

    async def begin(
        self,
        job_id: str,
        stage: str,
        record: Mapping[str, str],
        *,
        waits_on: Sequence[str] = (),
    ) -> tuple[JobRecord | None, int]:
        """Read the job's record and, in the same step, start its next attempt: the attempt
        counted and its first status event (`stage`) appended with `record`'s fields. Not
        started (0) when the record is gone, the job has ended, or the record holds any of
        `waits_on` (the job must first ask whether to wait). Returns the record as it was
        read, before the attempt, and the attempt's number."""
        event = StatusEvent(status=JobStatus.IN_PROGRESS, stage=stage, attempt=0)
        head, _, tail = encode_event(event).rpartition(b"0")
        holding = " " + " ".join(waits_on) + " "
        args: list[str | int | bytes] = [self._ttl, head, tail, _ENDED, holding]
        for field, value in record.items():
            args += [field, value]
        keys = self._script_keys(job_id)[:3]
        attempt, raw = await self._begin(keys=keys, args=args)
        fields = dict(zip(raw[::2], raw[1::2], strict=True))
        return (JobRecord.from_hash(job_id, fields) if fields else None), int(attempt)

    def _script_keys(self, job_id: str) -> list[str]:
        keys = self._keys
        return [keys.job(job_id), keys.events(job_id), keys.live(job_id), keys.ending]

    async def replay(self, job_id: str, after: int = 0) -> list[LoggedEvent]:
        """Every logged event with an id greater than `after`, in order."""
        entries = await self._redis.xrange(self._keys.events(job_id), min=f"0-{after + 1}")
        return [LoggedEvent(_event_id(entry_id), fields[b"e"]) for entry_id, fields in entries]

    async def answer_so_far(self, job_id: str) -> tuple[str, int]:
        """The job's answer as its logged events tell it (domain/transcript.py's one rule: a
        dead attempt's text is dropped), and the id of the last event it includes, so that
        resuming after that id continues exactly where the text stops."""
        transcript = Transcript()
        last_event_id = 0
        for event in await self.replay(job_id):
            last_event_id = event.id
            transcript.apply(decode_event(event.data))
        return transcript.text, last_event_id


def _event_id(stream_id: bytes | str) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    return int(text.partition("-")[2])


# Put in every subscriber's queue after the live connection was lost and re-established:
# events published meanwhile were missed, so each follower re-reads the log.
RESYNC = LoggedEvent(-1, b"")

# How long a channel that lost its last follower stays subscribed: the channels let go meanwhile
# leave together, in one UNSUBSCRIBE, rather than one round trip each (a stream's end is every
# answer's), and a follower that comes back meanwhile (a reconnect) needs no SUBSCRIBE.
UNSUBSCRIBE_DELAY = 0.5


class LiveHub:
    """One pub/sub connection shared by every SSE client of this process.

    `subscribe(job_id)` yields a queue of `LoggedEvent`s published for that job from the moment
    Redis confirmed the subscription, so a replay done afterwards cannot miss anything. A
    channel without followers is let go with the others let go within `UNSUBSCRIBE_DELAY`.

    The connection is the hub's own, outside `redis`'s pool and without its health check
    (`redis_pool.pubsub_pool`), so a SUBSCRIBE from a request task only writes to it and the
    reader task alone reads it.
    """

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._pool = pubsub_pool(redis)
        self._pubsub = PubSub(self._pool)
        self._queues: dict[str, set[asyncio.Queue[LoggedEvent]]] = {}
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._subscription_lock = asyncio.Lock()
        # Channels still subscribed that have no followers, and the task that lets them go.
        self._idle: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def close(self) -> None:
        for task in (self._reader, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._pool.aclose()

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Queue[LoggedEvent]]:
        channel = self._keys.live(job_id)
        queue: asyncio.Queue[LoggedEvent] = asyncio.Queue()
        try:
            async with self._subscription_lock:
                followers = self._queues.setdefault(channel, set())
                followers.add(queue)
                if len(followers) > 1 or channel in self._idle:
                    self._idle.discard(channel)  # still subscribed: nothing to ask Redis
                    confirmed = self._confirmations.get(channel) or _done_future()
                else:
                    confirmed = asyncio.get_running_loop().create_future()
                    self._confirmations[channel] = confirmed
                    await self._pubsub.subscribe(channel)
                    self._ensure_reader()
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=5.0)
            yield queue
        finally:
            await self._leave(channel, queue)

    async def _leave(self, channel: str, queue: asyncio.Queue[LoggedEvent]) -> None:
        async with self._subscription_lock:
            followers = self._queues.get(channel)
            if followers is None:
                return
            followers.discard(queue)
            if not followers:
                self._idle.add(channel)
                if self._sweeper is None or self._sweeper.done():
                    self._sweeper = asyncio.create_task(self._sweep(), name="live-hub-sweeper")

    async def _sweep(self) -> None:
        """After `UNSUBSCRIBE_DELAY`, lets go of every channel still without followers, in
        one command."""
        await asyncio.sleep(UNSUBSCRIBE_DELAY)
        async with self._subscription_lock:
            channels, self._idle = self._idle, set()
            for channel in channels:
                del self._queues[channel]
                self._confirmations.pop(channel, None)
            if channels:
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    await self._pubsub.unsubscribe(*channels)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="live-hub-reader")

    async def _read_forever(self) -> None:
        """Reads the connection and hands out its messages until cancelled.

        Any failure, not only a lost connection, ends in a reconnect and a resync of every
        follower: were this task to end, the streams already open would get no more events.
        """
        lost = False
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
                if lost:
                    lost = False
                    log.info("live pub/sub connection re-established")
                    self._resync()
                if message is not None:
                    self._dispatch(message)
            except (RedisConnectionError, RedisTimeoutError, OSError) as error:
                if not lost:
                    log.warning("live pub/sub connection lost; reconnecting", error=str(error))
                lost = True
                await asyncio.sleep(0.5)
            except Exception:
                # Say, a read that collided with another one while Valkey restarted: the
                # connection's state is unknown, so it starts over as if it had been lost.
                if not lost:
                    log.exception("live pub/sub reader failed; reconnecting")
                lost = True
                await self._disconnect()
                await asyncio.sleep(0.5)

    def _resync(self) -> None:
        """Reconnected (redis-py re-subscribes our channels on connect): anything published
        meanwhile is only in the logs, so every follower re-reads."""
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(RESYNC)

    async def _disconnect(self) -> None:
        """Drops the connection; the next read opens a new one, which re-subscribes."""
        connection = self._pubsub.connection
        if connection is not None:
            # Already failing: an error while closing it changes nothing.
            with contextlib.suppress(Exception):
                await connection.disconnect()

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == b"subscribe" or kind == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind not in (b"message", "message"):
            return
        data = message["data"]
        if not isinstance(data, bytes):
            return
        event_id, _, payload = data.partition(b" ")
        event = LoggedEvent(int(event_id), payload)
        for queue in self._queues.get(channel, ()):
            queue.put_nowait(event)


def _done_future() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
