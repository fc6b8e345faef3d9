"""Parsing in separate, killable processes: what a hostile file can cost the worker.

A few kilobytes of PDF can unfold into thousands of pages, and 30,000 nested `<div>`s make the
HTML parser itself quadratic. In a thread of the worker either one would hold the GIL, the
memory and the CPU that questions need, and could not be stopped. `ParserPool` instead runs
`parse()`, and the chunking of what it returns, in child processes (`parsing/child.py`, a
fresh interpreter: the worker runs an event loop and threads, and forking it would be
unsafe), each under a memory limit and a CPU-time allowance of its own, and ends a parse
that outlives its wall-clock limit by killing its process. A process is reused for the next
file unless it was killed or ran out of memory; a new one is started when needed, so a bomb
costs only its own process, and a file parsing next to it is not disturbed. A document sent
as JSON is chunked there too: megabytes of hostile text cost a parse process, never the
worker (parsing/chunking.py).

Every way a parse can end is a `RagError`: the parser's own (unsupported, corrupt, empty,
beyond `ParseLimits`, `TooManyChunks`), `ParseTimeout`, `ParseMemory` or `ParseCrashed`.
None is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import structlog

from rag_async.config import Settings
from rag_async.domain.errors import BadRequest, RagError, TooLarge
from rag_async.providers.parsing.child import FRAME_LENGTH
from rag_async.providers.parsing.chunking import MAX_HEADING_CHARS, Chunk, Chunking
from rag_async.providers.parsing.document import UnsupportedFormat
from rag_async.providers.parsing.limits import (
    ParseCrashed,
    ParseLimits,
    ParseMemory,
    ParseTimeout,
    TooDeep,
    TooManyChunks,
    TooManyPages,
    TooMuchText,
)
from rag_async.providers.parsing.parsed import ChunkedDocument

log = structlog.get_logger(__name__)

# A parse process imports Python and both parsers in a fraction of a second; this only bounds
# a machine so loaded that it cannot start one at all.
STARTUP_TIMEOUT = 60.0
# How long an idle process may take to exit when the pool closes, before it is killed.
_STOP_GRACE = 2.0
# The errors a child may name; anything else it names is read as a corrupt file.
_ERRORS: dict[str, type[RagError]] = {
    cls.__name__: cls
    for cls in (
        BadRequest,
        TooLarge,
        UnsupportedFormat,
        TooManyPages,
        TooDeep,
        TooMuchText,
        TooManyChunks,
        ParseMemory,
        ParseTimeout,
        ParseCrashed,
    )
}
# Headings a chunk's heading path can hold (ATX headings go six deep).
_HEADING_DEPTH = 6
# Where `rag_async` is imported from, for the child to import the same code.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[3])


class ParserPool:
    """Up to `workers` parse processes, started on demand and reused across files."""

    def __init__(
        self,
        *,
        workers: int,
        timeout: float,
        memory_mb: int,
        limits: ParseLimits = ParseLimits(),
        max_bytes: int | None = None,
    ) -> None:
        self._timeout = timeout
        self._memory_mb = memory_mb
        self._limits = limits
        self._max_bytes = max_bytes
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ParserPool:
        return cls(
            workers=settings.parse_workers,
            timeout=settings.parse_timeout,
            memory_mb=settings.parse_memory_mb,
            limits=ParseLimits(max_pages=settings.max_pages, max_chars=settings.max_document_chars),
            max_bytes=settings.max_document_bytes,
        )

    @property
    def processes(self) -> int:
        """Parse processes alive now (idle or parsing)."""
        return len(self._idle) + len(self._busy)

    async def parse(
        self, filename: str | None, content: bytes, chunking: Chunking, *, name: str | None = None
    ) -> ChunkedDocument:
        """`parse(filename, content)`, chunked by `chunking`, in a parse process within the
        pool's limits; `filename` None for a document sent as JSON (Markdown text), which
        `name` names in errors. Waiting for a free process does not count against the time
        limit; starting one does not either."""
        name = name or filename or "document"
        async with self._slots:
            if self._closed:
                raise RuntimeError("the parser pool is closed")
            child = self._idle.pop() if self._idle else await _Child.start(self._memory_mb)
            self._busy.add(child)
            reusable = False
            try:
                reply = await self._ask(child, filename, name, content, chunking)
                reusable = "memory" not in reply
            finally:
                self._busy.discard(child)
                if reusable and not self._closed:
                    self._idle.append(child)
                else:
                    await child.kill()
        return self._document(name, reply)

    async def close(self) -> None:
        """Stop every process: idle ones are asked to exit, busy ones are killed."""
        self._closed = True
        idle, self._idle = self._idle, []
        busy = list(self._busy)
        await asyncio.gather(*(child.stop() for child in idle), *(child.kill() for child in busy))

    async def _ask(
        self, child: _Child, filename: str | None, name: str, content: bytes, chunking: Chunking
    ) -> dict[str, Any]:
        header = {
            "filename": filename,
            "name": name,
            "max_bytes": self._max_bytes,
            "max_pages": self._limits.max_pages,
            "max_chars": self._limits.max_chars,
            # The kernel's own stop, should the worker be unable to kill the process.
            "cpu_seconds": math.ceil(self._timeout),
            "chunking": dataclasses.asdict(chunking),
        }
        try:
            async with asyncio.timeout(self._timeout):
                max_reply = self._max_reply(chunking)
                return await child.exchange(orjson.dumps(header), content, max_reply)
        except TimeoutError:
            raise ParseTimeout(
                f"{name}: parsing took longer than {self._timeout:g} s (RAG_PARSE_TIMEOUT)"
            ) from None
        except _ReplyTooLarge:
            raise TooMuchText.of(name, self._limits.max_chars or 0) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            if self._closed:  # the worker is stopping, not the file failing: another try
                raise RuntimeError("the parser pool closed during a parse") from None
            raise self._died(name, await child.exit_code()) from None

    def _max_reply(self, chunking: Chunking) -> int | None:
        """The longest answer a child may send: the text limit, JSON-escaped, the pages'
        offsets and the chunks' (with their heading paths). Anything longer is not read."""
        if self._limits.max_chars is None or chunking.max_chunks is None:
            return None
        per_chunk = 64 + 6 * _HEADING_DEPTH * (MAX_HEADING_CHARS + 8)
        return (
            6 * self._limits.max_chars
            + 16 * (self._limits.max_pages or 0)
            + per_chunk * chunking.max_chunks
            + (1 << 20)
        )

    def _document(self, name: str, reply: dict[str, Any]) -> ChunkedDocument:
        if "memory" in reply:
            raise ParseMemory(
                f"{name}: parsing needed more than {self._memory_mb} MB of memory "
                "(RAG_PARSE_MEMORY_MB)"
            )
        if "error" in reply:
            error = reply["error"]
            kind = _ERRORS.get(str(error.get("type")), BadRequest)
            raise kind(str(error["message"]), code=str(error["code"]))
        document = reply["document"]
        text: str = document["text"]
        chunks = tuple(
            Chunk(i, text[start:end], start, end, heading, page)
            for i, (start, end, heading, page) in enumerate(document["chunks"])
        )
        return ChunkedDocument(title=document["title"], format=document["format"], chunks=chunks)

    def _died(self, filename: str, code: int | None) -> ParseTimeout | ParseCrashed:
        if code == -signal.SIGXCPU:
            return ParseTimeout(
                f"{filename}: parsing used more than {math.ceil(self._timeout)} s of CPU time "
                "(RAG_PARSE_TIMEOUT)"
            )
        how = f"exit {code}"
        if code is not None and code < 0:
            how = f"killed by {_signal_name(-code)}"
        log.warning("parse process died", filename=filename, exit=how)
        return ParseCrashed(
            f"{filename}: the parse process died ({how}); a parser's C code failing to get "
            f"memory within {self._memory_mb} MB (RAG_PARSE_MEMORY_MB) ends it this way"
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _ReplyTooLarge(Exception):
    pass


class _Child:
    """One parse process and its pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, memory_mb: int) -> _Child:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (_SOURCE_ROOT, env.get("PYTHONPATH")) if path
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rag_async.providers.parsing.child",
            str(memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            limit=1 << 20,  # a document's text arrives in megabytes, not lines
        )
        child = cls(process)
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                hello = await child._receive(None)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            hello = {}
        except BaseException:
            await child.kill()
            raise
        if not hello.get("ready"):
            await child.kill()
            raise RuntimeError(
                f"a parse process did not start (exit {process.returncode}); see its stderr"
            )
        return child

    @property
    def _alive(self) -> bool:
        return self._process.returncode is None

    async def exchange(
        self, header: bytes, content: bytes, max_reply: int | None
    ) -> dict[str, Any]:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(FRAME_LENGTH.pack(len(header)) + header)
        stdin.write(FRAME_LENGTH.pack(len(content)))
        stdin.write(content)
        await stdin.drain()
        return await self._receive(max_reply)

    async def _receive(self, max_reply: int | None) -> dict[str, Any]:
        stdout = self._process.stdout
        assert stdout is not None
        (length,) = FRAME_LENGTH.unpack(await stdout.readexactly(FRAME_LENGTH.size))
        if max_reply is not None and length > max_reply:
            raise _ReplyTooLarge
        payload = await stdout.readexactly(length)
        if length > 1 << 20:  # a big document's text: decoded off the event loop
            reply: dict[str, Any] = await asyncio.to_thread(orjson.loads, payload)
        else:
            reply = orjson.loads(payload)
        return reply

    async def exit_code(self) -> int | None:
        """The exit status of a process that closed its pipes (it is dying, or dead)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_GRACE):
                return await self._process.wait()
        await self.kill()
        return self._process.returncode

    async def kill(self) -> None:
        if self._alive:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        # Reaped even if the parse that owned it is being cancelled.
        await asyncio.shield(self._process.wait())

    async def stop(self) -> None:
        stdin = self._process.stdin
        if stdin is not None:
            stdin.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_GRACE):
                await self._process.wait()
                return
        await self.kill()
