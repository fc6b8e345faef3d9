"""Documents against the real stack (Valkey, the app under uvicorn, an arq worker, embedded
Qdrant): each format, re-ingest, delete, collections, bad files, and the CLI's folder ingest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rag_async.client.api import ApiError, JobEvent
from rag_async.local.valkey import EmbeddedValkey
from rag_async.providers.parsing import parse
from rag_async.providers.parsing.html import parse_html
from rag_async.providers.retrieval import chunk_text
from tests.conftest import Stack, cli_env, make_settings, run_cli, running_stack
from tests.support.documents import add_document
from tests.support.hostile import assemble_pdf

MAX_BYTES = 20_000


@pytest.fixture
async def docs(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> AsyncIterator[Stack]:
    """The stack with a small document limit (so that "oversized" is cheap to make) and
    small chunks (so that a page of text makes several)."""
    settings = make_settings(
        valkey,
        tmp_path,
        llm_base_url=llm.base_url,
        llm_api_key="test-key",
        max_document_bytes=MAX_BYTES,
        chunk_tokens=20,
        chunk_overlap=4,
    )
    async with running_stack(settings) as stack:
        yield stack


def make_pdf(pages: list[str], title: str = "") -> bytes:
    """A minimal valid PDF, written by hand: one line of Helvetica text per page."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % (4 + 2 * i) for i in range(len(pages))), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % escaped.encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    objects.append(b"<< /Title (%s) >>" % title.encode("latin-1"))
    return assemble_pdf(objects, info=len(objects))


SITE_PAGE = b"""<!doctype html>
<html><head><title>Kettle manual</title><script>var tracking = "zzscriptword";</script></head>
<body>
<header><a href="/">Home</a> zzheaderword</header>
<nav><ul><li><a href="/a">zznavword one</a></li><li><a href="/b">two</a></li></ul></nav>
<div class="sphinxsidebar">zzsidebarword quick search</div>
<main>
<h1>Kettle manual</h1>
<p>The kettle boils water.</p>
<h2>Descaling</h2>
<p>Descale the <b>kettle</b> monthly with citric acid to remove limescale deposits.</p>
<pre># not a heading
descale --citric</pre>
</main>
<footer>Copyright zzfooterword</footer>
</body></html>
"""


async def finish(stack: Stack, job_id: str) -> list[JobEvent]:
    return [event async for event in stack.client.follow(job_id)]


async def sources_for(stack: Stack, query: str, collection: str | None = None) -> list[Any]:
    accepted = await stack.client.ask(query, collection=collection)
    events = await finish(stack, accepted["job_id"])
    assert events[-1].type == "done", events[-1]
    return next(event.data["sources"] for event in events if event.type == "sources")


async def chunks_of(stack: Stack, document_id: str) -> int:
    assert stack.worker is not None
    count: int = await stack.worker.ctx["services"].retriever.count(document_id)
    return count


async def upload(stack: Stack, *files: tuple[str, bytes], **options: str) -> dict[str, Any]:
    return await stack.client.upload(list(files), **options)


# --- parsing -------------------------------------------------------------------------------


def test_html_loses_its_boilerplate_and_keeps_headings_and_code() -> None:
    parsed = parse("manual.html", SITE_PAGE)

    assert parsed.title == "Kettle manual"
    assert parsed.text.startswith("# Kettle manual\n\nThe kettle boils water.\n\n## Descaling")
    assert "```\n# not a heading\ndescale --citric\n```" in parsed.text
    for word in ("zzscriptword", "zzheaderword", "zznavword", "zzsidebarword", "zzfooterword"):
        assert word not in parsed.text


SPHINX_PAGE = b"""<html><head><title>pathtools - Docs</title></head><body>
<div class="body" role="main"><section><h1>pathtools</h1>
<p>Join paths with <a href="#pathtools.join"><code>join()</code></a>, or see the
<a href="glossary.html">glossary</a> for the words used here.</p>
<div class="toctree-wrapper"><ul>
<li><a href="a.html">Installing zzlinkword</a></li><li><a href="b.html">Tutorial</a></li>
<li><a href="c.html"><code>pathtools.join</code></a></li><li><a href="d.html">FAQ</a></li>
</ul></div>
<p>Source code: <a href="src/pathtools.py">Lib/pathtools.py</a></p>
<section><h2>Functions</h2>
<dl class="py function"><dt class="sig" id="pathtools.join">pathtools.join(path, *paths)</dt>
<dd><p>Join one or more path segments intelligently.</p>
<dl class="field-list"><dt>Returns</dt><dd><p>a string</p></dd></dl></dd></dl>
<p>All functions accept bytes too.</p>
</section></section></div></body></html>"""


def test_html_blocks_of_mostly_link_text_are_dropped_as_navigation() -> None:
    text = parse("pathtools.html", SPHINX_PAGE).text

    # A table of contents and a "source code" line: links to other pages.
    assert "zzlinkword" not in text and "Tutorial" not in text and "Lib/pathtools" not in text
    # Inline links to identifiers (and a minority of plain links) are a sentence's words.
    assert "Join paths with join(), or see the glossary for the words used here." in text
    # A section made of navigation keeps its headings: the page is not emptied.
    assert parse("contents.html", b"<h1>Contents</h1><ul><li><a href=a>A</a></ul>").text == (
        "# Contents"
    )


def test_an_html_definition_term_with_an_id_can_start_a_section() -> None:
    assert "### pathtools.join" not in parse("pathtools.html", SPHINX_PAGE).text  # off by default
    text = parse_html("pathtools.html", SPHINX_PAGE, definition_sections=True).text
    chunks = chunk_text(text, max_tokens=20, overlap=0)
    heading_of = {part: c.heading for c in chunks for part in c.text.split("\n\n")}

    signature = "pathtools › Functions › pathtools.join(path, *paths)"
    assert heading_of["Join one or more path segments intelligently."] == signature
    assert heading_of["a string"] == signature  # a field list's term is no section
    # The text after the definition list is the section's again, not the function's.
    assert heading_of["All functions accept bytes too."] == "pathtools › Functions"


def test_pdf_pages_are_numbered() -> None:
    parsed = parse("book.pdf", make_pdf(["Kettles boil.", "Samovars simmer."], title="Book"))

    assert parsed.title == "Book"
    assert parsed.text == "Kettles boil.\n\nSamovars simmer."
    assert parsed.page_starts == (0, parsed.text.index("Samovars"))  # where pages 1 and 2 begin


# --- ingestion through the API --------------------------------------------------------------


async def test_each_format_is_ingested_and_cited_with_heading_and_page(docs: Stack) -> None:
    accepted = await upload(
        docs,
        ("notes.txt", b"Plain notes mention the zebrafish aquarium on the third shelf."),
        ("guide.md", b"# Guide\n\n## Setup\n\nInstall the quokka package before anything else.\n"),
        ("manual.html", SITE_PAGE),
        ("book.pdf", make_pdf(["Front page.", "The samovar chapter starts here."], "Tea Book")),
    )
    assert len(accepted["documents"]) == 4 and not accepted["rejected"]
    assert accepted["job_id"] == accepted["documents"][0]["job_id"]
    for document in accepted["documents"]:
        events = await finish(docs, document["job_id"])
        assert events[-1].type == "done", events[-1]
        stages = [e.data["stage"] for e in events if e.type == "progress"]
        assert stages[0] == "parsed" and stages[-1] == "upserted"

    top = (await sources_for(docs, "Where is the zebrafish aquarium?"))[0]
    assert top["title"] == "notes" and "third shelf" in top["text"]
    top = (await sources_for(docs, "Which package to install first, quokka?"))[0]
    assert top["title"] == "Guide" and top["heading"] == "Guide › Setup"
    top = (await sources_for(docs, "How often to descale with citric acid?"))[0]
    assert top["title"] == "Kettle manual"
    assert top["heading"] == "Kettle manual › Descaling"
    assert top["source"] == "manual.html"
    top = (await sources_for(docs, "samovar chapter"))[0]
    assert top["title"] == "Tea Book" and top["page"] == 2

    # The page's navigation and footer were never indexed.
    for word in ("zznavword", "zzfooterword", "zzsidebarword"):
        assert all(word not in s["text"] for s in await sources_for(docs, word))

    listed = {d["filename"]: d for d in await docs.client.documents()}
    assert set(listed) == {"notes.txt", "guide.md", "manual.html", "book.pdf"}
    pdf = listed["book.pdf"]
    assert pdf["status"] == "indexed" and pdf["format"] == "pdf"
    assert pdf["collection"] == "default" and pdf["chunks"] >= 1
    assert pdf["size"] > 0 and pdf["ingested_at"] > 0 and pdf["title"] == "Tea Book"
    shown = await docs.client.document(pdf["document_id"])
    assert shown == pdf


def _long_document(words: list[str]) -> bytes:
    paragraphs = [
        f"Paragraph {i} is about {word} and nothing else at all." for i, word in enumerate(words)
    ]
    return ("# Long\n\n" + "\n\n".join(paragraphs)).encode()


async def test_reingest_replaces_without_stale_chunks(docs: Stack) -> None:
    old = _long_document([f"oldword{i}" for i in range(12)] + ["marmalade"])
    first = await upload(docs, ("long.md", old))
    assert (await finish(docs, first["job_id"]))[-1].type == "done"
    document_id = first["document_id"]
    before = await chunks_of(docs, document_id)
    assert before >= 6

    indexed_at = (await docs.client.document(document_id))["ingested_at"]

    # The same content again adds nothing: nothing is chunked or written, the job says so.
    again = await upload(docs, ("long.md", old))
    assert again["document_id"] == document_id
    events = await finish(docs, again["job_id"])
    assert events[-1].type == "done"
    assert events[-1].data["answer"] == f"unchanged: {before} chunks already indexed"
    assert [e.data["stage"] for e in events if e.type == "progress"] == ["unchanged"]
    assert await chunks_of(docs, document_id) == before
    shown = await docs.client.document(document_id)
    assert shown["status"] == "indexed" and shown["ingested_at"] == indexed_at

    # Chunks lost behind the registry's back (a Qdrant wiped) are not vouched for.
    assert docs.worker is not None
    await docs.worker.ctx["services"].retriever.delete(document_id)
    events = await finish(docs, (await upload(docs, ("long.md", old)))["job_id"])
    assert events[-1].data["answer"] == f"indexed {before} chunks"
    assert await chunks_of(docs, document_id) == before

    # The same bytes under another title are indexed again: chunks carry their title.
    async with httpx.AsyncClient(base_url=docs.base_url) as http:
        response = await http.post(
            "/documents", files=[("files", ("long.md", old))], data={"title": "Longer"}
        )
    assert response.json()["document_id"] == document_id
    events = await finish(docs, response.json()["job_id"])
    assert events[-1].data["answer"] == f"indexed {before} chunks"
    assert (await sources_for(docs, "marmalade"))[0]["title"] == "Longer"

    # A shorter version replaces it: no chunk of the old one survives.
    new = _long_document(["butterscotch"])
    changed = await upload(docs, ("long.md", new))
    assert (await finish(docs, changed["job_id"]))[-1].type == "done"
    after = await chunks_of(docs, document_id)
    assert 0 < after < before
    assert (await docs.client.document(document_id))["chunks"] == after
    assert all(s["document_id"] != document_id for s in await sources_for(docs, "marmalade"))
    assert (await sources_for(docs, "butterscotch"))[0]["document_id"] == document_id


async def test_job_status_shows_the_latest_progress(docs: Stack) -> None:
    accepted = await upload(docs, ("long.md", _long_document(["quince"] * 10)))
    job_id = accepted["job_id"]
    seen = []
    async for event in docs.client.follow(job_id):
        if event.type == "progress":
            # The record is updated in the same step as the event is logged: polling now
            # shows this progress or a later one, never an earlier one.
            polled = (await docs.client.job(job_id))["progress"]
            seen.append((event.data["stage"], polled["stage"]))
            last = {k: event.data[k] for k in ("stage", "done", "total")}
    stages = ["parsed", "chunked", "upserted"]
    assert [event for event, _ in seen] == stages
    assert all(stages.index(polled) >= stages.index(event) for event, polled in seen)
    status = await docs.client.job(job_id)
    assert status["status"] == "complete"
    assert status["progress"] == last and last["stage"] == "upserted"
    assert last["done"] == last["total"] == status["chunks"] > 1


async def test_delete_removes_every_chunk(docs: Stack) -> None:
    accepted = await upload(docs, ("long.md", _long_document(["gooseberry"] * 8)))
    assert (await finish(docs, accepted["job_id"]))[-1].type == "done"
    document_id = accepted["document_id"]
    assert await chunks_of(docs, document_id) > 1

    deleting = await docs.client.delete_document(document_id)
    events = await finish(docs, deleting["job_id"])
    assert events[-1].type == "done", events[-1]

    assert await chunks_of(docs, document_id) == 0
    assert await sources_for(docs, "gooseberry") == []
    with pytest.raises(ApiError) as missing:
        await docs.client.document(document_id)
    assert missing.value.status == 404
    assert document_id not in {d["document_id"] for d in await docs.client.documents()}
    with pytest.raises(ApiError) as again:
        await docs.client.delete_document(document_id)
    assert again.value.status == 404


async def test_collections_never_mix(docs: Stack) -> None:
    for collection, fruit in (("red", "cherries"), ("green", "limes")):
        text = f"# Orchard\n\nThe orchard grows {fruit} in rows.".encode()
        accepted = await upload(docs, ("orchard.md", text), collection=collection)
        assert (await finish(docs, accepted["job_id"]))[-1].type == "done"
    # JSON bodies take a collection too; the default collection is separate again.
    json_doc = await add_document(
        docs.client, "The orchard grows plums.", title="Plums", collection="blue"
    )
    assert (await finish(docs, json_doc["job_id"]))[-1].type == "done"

    red = await sources_for(docs, "What does the orchard grow?", collection="red")
    assert red and all("cherries" in s["text"] and s["collection"] == "red" for s in red)
    green = await sources_for(docs, "orchard cherries limes plums", collection="green")
    assert green and all("limes" in s["text"] for s in green)
    assert await sources_for(docs, "orchard cherries limes plums") == []  # the default one
    listed = await docs.client.documents("red")
    assert [d["collection"] for d in listed] == ["red"]
    # The same file name in two collections is two documents.
    assert len({d["document_id"] for d in await docs.client.documents()}) == 3


async def test_bad_files_fail_alone(docs: Stack) -> None:
    accepted = await upload(
        docs,
        ("good.md", b"# Good\n\nThe good file talks about pistachios."),
        ("virus.exe", b"MZ\x90\x00"),
        ("empty.txt", b""),
        ("huge.md", b"word " * (MAX_BYTES // 4)),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a PDF at all\n%%EOF"),
        ("scan.pdf", make_pdf([""])),
    )
    rejected = {r["filename"]: (r["status"], r["code"]) for r in accepted["rejected"]}
    assert rejected == {
        "virus.exe": (415, "unsupported_format"),
        "empty.txt": (422, "empty_document"),
        "huge.md": (413, "document_too_large"),
    }
    outcomes = {}
    for document in accepted["documents"]:
        last = (await finish(docs, document["job_id"]))[-1]
        outcomes[document["filename"]] = (last.type, last.data.get("code"))
    assert outcomes == {
        "good.md": ("done", None),
        "broken.pdf": ("error", "corrupt_document"),
        "scan.pdf": ("error", "empty_document"),
    }
    assert (await sources_for(docs, "pistachios"))[0]["title"] == "Good"
    listed = {d["filename"]: d for d in await docs.client.documents()}
    assert listed["broken.pdf"]["status"] == "failed"
    assert "not a readable PDF" in listed["broken.pdf"]["error"]
    status = await docs.client.job(accepted["documents"][1]["job_id"])
    assert status["status"] == "failed" and "broken.pdf" in status["error"]

    # Nothing in the upload can be ingested: a 4xx, with the file's own status if just one.
    for files, code in (
        ([("a.docx", b"x")], 415),
        ([("a.docx", b"x"), ("b.txt", b"")], 422),
    ):
        async with httpx.AsyncClient(base_url=docs.base_url) as http:
            response = await http.post("/documents", files=[("files", f) for f in files])
        assert response.status_code == code, response.text
        assert response.json()["error"]["message"]


@pytest.mark.timeout(120)
async def test_cli_ingests_a_folder_into_a_collection(docs: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "site"
    (folder / "drafts").mkdir(parents=True)
    (folder / "index.html").write_bytes(SITE_PAGE)
    (folder / "notes.md").write_text("# Notes\n\nThe wombat sleeps in the afternoon.\n")
    (folder / "book.pdf").write_bytes(make_pdf(["The capybara chapter."], "Capybaras"))
    (folder / "drafts" / "secret.md").write_text("# Draft\n\nThe platypus draft.\n")
    (folder / "image.png").write_bytes(b"\x89PNG")
    env = cli_env(docs.settings, RAG_API_URL=docs.base_url)

    result = await asyncio.to_thread(
        run_cli, "ingest", str(folder), "--collection", "zoo", "--exclude", "drafts/*", env=env
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 documents ingested" in result.stdout, result.stdout
    listed = await docs.client.documents("zoo")
    assert {d["title"] for d in listed} == {"Kettle manual", "Notes", "Capybaras"}
    assert (await sources_for(docs, "wombat", collection="zoo"))[0]["title"] == "Notes"
    assert await sources_for(docs, "wombat") == []

    shown = await asyncio.to_thread(run_cli, "documents", "list", "--collection", "zoo", env=env)
    assert "3 documents" in shown.stdout, shown.stdout + shown.stderr
    notes = next(d for d in listed if d["title"] == "Notes")
    deleted = await asyncio.to_thread(run_cli, "documents", "delete", notes["document_id"], env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert await sources_for(docs, "wombat", collection="zoo") == []
