"""How the CLI words what the API returns: sources, times, sizes, counts. Pure functions of
the API's JSON, every string of it passed through `plain` (a document wrote it)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from rag_async.client.cli.base import one_line, plain


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def where(source: Mapping[str, Any]) -> str:
    """`Title › Section (file, page 3)`, as the web page names a passage: the heading path
    (which starts at the title), then the file it came from and the page it starts on."""
    title = one_line(source.get("title") or "untitled")
    # The heading path starts at the document's first heading, most often its title.
    sections = [one_line(part) for part in (source.get("heading") or "").split(" › ")]
    sections = [part for part in sections if part]
    if sections and sections[0] == title:
        sections = sections[1:]
    place = " › ".join([title, *sections])
    origin = [one_line(str(source["source"]))] if source.get("source") else []
    if source.get("page"):
        origin.append(f"page {source['page']}")
    return f"{place} ({', '.join(origin)})" if origin else place


def source_lines(sources: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line a source; two passages of one section (which `where` names alike) are told
    apart by their passage numbers, as the web page shows them."""
    sources = list(sources)
    places = [where(source) for source in sources]
    lines = []
    for source, place in zip(sources, places, strict=True):
        if places.count(place) > 1:
            passage = f"passage {int(source.get('chunk', 0)) + 1}"
            place = f"{place[:-1]}, {passage})" if place.endswith(")") else f"{place} ({passage})"
        lines.append(f"  [{source['n']}] {place}")
    return lines


# "[1]" or "[1, 3]": the citation marks of an answer (the page reads them alike).
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def sources_heading(answer: str | None, sources: Iterable[Mapping[str, Any]]) -> str:
    """ "Sources:", or what they are when the answer cites none of them ("Nothing relevant
    to that was found ..."): the closest passages, which did not support it."""
    cited = {int(n) for found in _CITATION.findall(answer or "") for n in found.split(",")}
    if any(source.get("n") in cited for source in sources):
        return "Sources:"
    return "Closest passages (the answer cites none of them):"


def seconds(value: float) -> str:
    """`230 ms` or `1.4 s`, as the web page shows a duration."""
    return f"{round(value * 1000)} ms" if value < 1 else f"{value:.1f} s"


def ago(unix: float, now: float | None = None) -> str:
    elapsed = max(0.0, (time.time() if now is None else now) - unix)
    if elapsed < 2:
        return "just now"
    if elapsed < 90:
        return f"{round(elapsed)} s ago"
    if elapsed < 90 * 60:
        return f"{round(elapsed / 60)} min ago"
    if elapsed < 36 * 3600:
        return f"{round(elapsed / 3600)} h ago"
    return f"{round(elapsed / 86400)} days ago"


def moment(unix: float) -> str:
    """`2025-05-01 14:03:12 (3 min ago)`, in the local time zone."""
    stamp = datetime.fromtimestamp(unix).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} ({ago(unix)})"


def size(count: int) -> str:
    if count < 1000:
        return plural(count, "byte")
    value, unit = count / 1000, "kB"
    for larger in ("MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.1f} {unit}"


def fields(pairs: Iterable[tuple[str, object]]) -> list[str]:
    """`name: value` lines, skipping the empty ones."""
    return [f"{name}: {one_line(str(value))}" for name, value in pairs if value not in (None, "")]


# ---- a document (GET /documents/{id}) ------------------------------------------------------


def document_lines(entry: Mapping[str, Any]) -> list[str]:
    chunks = entry.get("chunks")
    status = entry.get("status", "")
    if status == "indexed" and chunks is not None:
        status = f"indexed, {plural(chunks, 'chunk')}"
    source, file = entry.get("source"), entry.get("filename")
    attributes = entry.get("attributes") or {}
    # As `ingest --attribute` takes them (text as it is: JSON would quote it).
    shown = ", ".join(
        f"{key}={value if isinstance(value, str) else orjson.dumps(value).decode()}"
        for key, value in attributes.items()
    )
    return fields(
        [
            ("id", entry.get("document_id")),
            ("title", entry.get("title")),
            ("source", source),
            ("file", file if file and not (source or "").endswith(file) else None),
            ("format", entry.get("format")),
            ("collection", entry.get("collection")),
            ("attributes", shown or None),
            ("status", status),
            ("size", size(entry["size"]) if entry.get("size") is not None else None),
            ("ingested", moment(entry["ingested_at"]) if entry.get("ingested_at") else None),
            ("last job", entry.get("job_id")),
            ("version", entry.get("version")),  # the job whose chunks are searchable
            ("owner", entry.get("owner")),
            ("error", entry.get("error")),
        ]
    )


# ---- a job (GET /jobs/{id}) ----------------------------------------------------------------

# The worker's timings, in the order a job goes through them.
_TIMINGS = {
    "queue_wait": "queued",
    "embedding": "embedding",
    "retrieval": "retrieval",
    "generation": "generation",
}


def took(timings: Mapping[str, float]) -> str | None:
    if "total" not in timings:
        return None
    parts = [
        f"{label} {seconds(timings[key])}" for key, label in _TIMINGS.items() if key in timings
    ]
    total = seconds(timings["total"])
    return f"{total} ({', '.join(parts)})" if parts else total


def job_status(view: Mapping[str, Any]) -> str:
    status = str(view.get("status", ""))
    details = []
    if view.get("stage") and status == "in_progress":
        details.append(str(view["stage"]))
    if view.get("queue_position"):
        details.append(f"position {view['queue_position']} in the queue")
    if (view.get("attempt") or 0) > 1:
        details.append(f"attempt {view['attempt']}")
    status = status.replace("_", " ")
    return f"{status} ({', '.join(details)})" if details else status


def job_lines(view: Mapping[str, Any]) -> list[str]:
    progress = view.get("progress")
    return fields(
        [
            ("job", view.get("job_id")),
            ("kind", view.get("kind")),  # as --json and `dlq list` name it
            ("status", job_status(view)),
            ("question", view.get("query")),
            ("document", view.get("document_id")),
            ("progress", _progress(progress) if progress and not view.get("chunks") else None),
            ("chunks", view.get("chunks")),
            ("created", moment(view["created_at"]) if view.get("created_at") else None),
            ("finished", moment(view["finished_at"]) if view.get("finished_at") else None),
            ("took", took(view.get("timings") or {})),
            *_providers(view.get("providers") or {}),
            ("worker", view.get("worker")),
            ("error", view.get("error")),
        ]
    )


def _progress(progress: Mapping[str, Any]) -> str:
    return f"{progress['stage']} {progress['done']} of {progress['total']}"


def _providers(providers: Mapping[str, str]) -> list[tuple[str, str]]:
    """`retrieval: lexical-bm25 (offline)`, `answerer: extractive (…)`."""
    return [("answerer" if name == "llm" else name, value) for name, value in providers.items()]


# ---- the service (GET /stats) --------------------------------------------------------------


def waiting_lines(stats: Mapping[str, Any]) -> list[str]:
    """The jobs waiting their turn (fair share), per queue and priority, and for an admin key
    the keys with the most waiting; nothing when none waits."""
    parts = [
        f"{lane} {priority} {waited['jobs']} (oldest {waited['oldest_age']:.1f} s)"
        for lane, priorities in (stats.get("waiting") or {}).items()
        for priority, waited in priorities.items()
        if waited.get("jobs")
    ]
    if not parts:
        return []
    lines = [f"waiting their turn: {plain(', '.join(parts))}"]
    for lane, keys in (stats.get("busiest_keys") or {}).items():
        if keys:
            named = ", ".join(f"{one_line(key['key'] or 'local')} {key['waiting']}" for key in keys)
            lines.append(f"  most waiting, {plain(lane)}: {named}")
    return lines


def stats_lines(stats: Mapping[str, Any], now: float | None = None) -> list[str]:
    queues = ", ".join(f"{lane} {count}" for lane, count in (stats.get("queues") or {}).items())
    workers = stats.get("workers")
    alive = len(workers) if workers is not None else stats.get("workers_alive", 0)
    lines = [
        f"queue: {plural(stats.get('queue_depth', 0), 'job')} waiting"
        + (f" (queued or running: {queues})" if queues else ""),
        f"in flight: {plural(stats.get('jobs_in_flight', 0), 'job')}",
        f"workers: {alive} alive",
    ]
    lines += waiting_lines(stats)
    for worker in workers or []:
        running = plural(int(worker.get("in_flight", 0)), "job")
        seen = ago(worker["last_seen"], now) if worker.get("last_seen") else "never"
        lines.append(f"  {one_line(str(worker['id']))}: {running} running, last heard {seen}")
    breakers = stats.get("breakers") or {}
    if breakers:
        states = ", ".join(f"{name} {state}" for name, state in sorted(breakers.items()))
        lines.append(f"breakers: {plain(states)}")
    failures = stats.get("recent_failures")
    if failures is not None:
        lines.append(f"recent failures: {len(failures) or 'none'}")
        for failure in failures:
            at = ago(failure["at"], now) if failure.get("at") else ""
            message = one_line(str(failure.get("error", "")))
            job = one_line(str(failure.get("job_id", "")))
            lines.append(f"  {at}  {job}  {message}".rstrip())
    return lines
