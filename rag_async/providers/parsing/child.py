"""The parse process: `python -m rag_async.providers.parsing.child MEMORY_MB`, started and fed by
`parsing.isolated.ParserPool`.

It parses and chunks one document at a time, for as long as its parent keeps it, under limits
of its own: an
address space of MEMORY_MB (RLIMIT_AS, so that a blow-up raises MemoryError here rather than
swapping the worker), a CPU-time allowance per file (RLIMIT_CPU: the kernel ends a parse that
its parent can no longer kill, say a worker that died), and no core dumps.

Chunking happens here too, for a file and for a document sent as JSON (`filename` null: its
bytes are Markdown text, checked by the API), and stops at the chunk past `max_chunks`: a
hostile text (megabytes of "#" lines) costs this process, not the worker's loop and memory.

The wire, both ways: frames of a 4-byte big-endian length and a payload. The parent sends a
JSON header (`filename`, `name`, `max_bytes`, `max_pages`, `max_chars`, `cpu_seconds`,
`chunking`) and the document's bytes; the child answers with one JSON object: `{"document":
{"title", "format", "text", "chunks": [[start, end, heading, page], ...]}}` (the text once, and
each chunk as offsets into it: overlapping chunks would send their shared text twice),
`{"error": {"type", "code", "message"}}`, or `{"memory": true}` (after which it exits, as a
process that ran out of memory may be in no state to go on). It says `{"ready": true}` once,
when it can start. JSON, not pickle: the parent does not run whatever a child that parsed a
hostile file sends.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import struct
import sys
from typing import IO, Any

import orjson

from rag_async.domain.errors import RagError
from rag_async.providers.parsing.chunking import Chunking, chunk_document
from rag_async.providers.parsing.document import parse
from rag_async.providers.parsing.limits import ParseLimits
from rag_async.providers.parsing.parsed import ParsedDocument

FRAME_LENGTH = struct.Struct(">I")


def main() -> None:
    memory_mb = int(sys.argv[1])
    # Frames go out on what was stdout; a library's stray print goes to stderr (the worker's
    # log) instead of into the middle of a frame.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The worker decides when a parse ends: Ctrl-C in a terminal reaches the whole process
    # group, and must not fail the document being parsed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _preload()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (_below(memory, hard), hard))
    send(out, {"ready": True})
    stdin = sys.stdin.buffer
    while True:
        header = receive(stdin)
        content = receive(stdin) if header is not None else None
        if header is None or content is None:
            return  # the parent closed the pipe: the pool is closing, or the worker is gone
        reply = _parse(orjson.loads(header), content)
        try:
            send(out, reply)
        except MemoryError:
            reply = {"memory": True}
            send(out, reply)
        if "memory" in reply:
            return


def _parse(request: dict[str, Any], content: bytes) -> dict[str, Any]:
    name = str(request["name"])
    _allow_cpu(float(request["cpu_seconds"]))
    try:
        document = _read(request, content)
        chunking = Chunking(**request["chunking"])
        chunks = chunk_document(document.text, document.page_starts, chunking, name=name)
    except MemoryError:
        return {"memory": True}
    except RagError as error:
        return _error(type(error).__name__, error.code, error.message)
    except RecursionError:
        return _error("TooDeep", "too_deep", f"{name}: nested too deeply to parse")
    except Exception as error:  # a parser's own bug, met on this file: it would meet it again
        message = f"{name}: the parser failed ({type(error).__name__}: {error})"
        return _error("BadRequest", "corrupt_document", message)
    return {
        "document": {
            "title": document.title,
            "format": document.format,
            "text": document.text,
            "chunks": [[c.start, c.end, c.heading, c.page] for c in chunks],
        }
    }


def _read(request: dict[str, Any], content: bytes) -> ParsedDocument:
    """The file parsed, or the text of a document sent as JSON."""
    filename = request["filename"]
    if filename is None:
        return ParsedDocument(title=None, text=content.decode("utf-8"), format="markdown")
    limits = ParseLimits(max_pages=request["max_pages"], max_chars=request["max_chars"])
    return parse(str(filename), content, max_bytes=request["max_bytes"], limits=limits)


def _error(kind: str, code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message}}


def _preload() -> None:
    """Import both parsers now: the first file's time limit is not spent on imports."""
    import rag_async.providers.parsing.html
    import rag_async.providers.parsing.pdf  # noqa: F401


def _allow_cpu(seconds: float) -> None:
    """This file may use `seconds` more of CPU time (RLIMIT_CPU counts the process's life)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds)
    resource.setrlimit(resource.RLIMIT_CPU, (_below(soft, hard), hard))


def _below(value: int, hard: int) -> int:
    return value if hard == resource.RLIM_INFINITY else min(value, hard)


def send(out: IO[bytes], message: dict[str, Any]) -> None:
    payload = orjson.dumps(message)
    out.write(FRAME_LENGTH.pack(len(payload)) + payload)
    out.flush()


def receive(stream: IO[bytes]) -> bytes | None:
    """One frame, or None at the end of the stream."""
    head = stream.read(FRAME_LENGTH.size)
    if len(head) < FRAME_LENGTH.size:
        return None
    (length,) = FRAME_LENGTH.unpack(head)
    payload = stream.read(length)
    return payload if len(payload) == length else None


if __name__ == "__main__":
    main()
