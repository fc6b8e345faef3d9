"""The page around the answer: uploads of every type the API takes, in its own words when it
refuses; the service panel folded into the side column; the welcome card with the collections
and questions to try; the collection picker. In Debian's chromium, against the real API,
worker and Valkey."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from rag_async.local.demo_corpus import demo_documents
from rag_async.providers.parsing import FORMATS, UnsupportedFormat, format_of
from tests.conftest import Stack, ingest, make_settings, running_stack, running_worker
from tests.support.browser import (  # skips the module without chromium or playwright
    ANSWER_DONE,
    Page,
    Watched,
    ask,
    shows_question,
)
from tests.support.documents import add_document
from tests.support.hostile import assemble_pdf

pytestmark = pytest.mark.timeout(60)


def text_pdf(line: bytes) -> bytes:
    """A one-page PDF saying `line`."""
    stream = b"BT /F1 12 Tf 72 720 Td (" + line + b") Tj ET"
    return assemble_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        ]
    )


def unsupported(filename: str) -> str:
    with pytest.raises(UnsupportedFormat) as refused:
        format_of(filename)
    return refused.value.message


async def upload(page: Page, name: str, mime: str, content: bytes) -> None:
    await page.set_input_files(
        "#file-input", files=[{"name": name, "mimeType": mime, "buffer": content}]
    )


async def upload_status(page: Page, name: str, state: str) -> str:
    row = page.locator(f".upload.{state}", has_text=name)
    await row.wait_for()
    return str(await row.locator(".upload-status").text_content())


KETTLES_HTML = b"""<!doctype html><html><head><title>Kettles</title></head><body>
<h1>Kettles</h1><p>A gooseneck kettle pours slowly, which suits pour-over coffee.</p>
</body></html>"""


async def test_uploads_take_every_type_the_api_parses_and_refuse_in_its_words(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    await page.goto(stack.base_url)
    # The picker offers what the API parses (rag_async/parsing FORMATS), no less, no more.
    accept = str(await page.get_attribute("#file-input", "accept"))
    assert set(accept.split(",")) == set(FORMATS)

    await upload(page, "kettles.html", "text/html", KETTLES_HTML)
    assert await upload_status(page, "kettles.html", "complete") == "Added: 1 passage"
    samovar = text_pdf(b"A samovar keeps water hot for tea all day long.")
    await upload(page, "samovar.pdf", "application/pdf", samovar)
    assert await upload_status(page, "samovar.pdf", "complete") == "Added: 1 passage"
    long_text = "\n\n".join(f"Paragraph {i} about kettles and {'tea ' * 60}." for i in range(6))
    await upload(page, "long.txt", "text/plain", long_text.encode())
    assert re.fullmatch(
        r"Added: [2-9]\d* passages", await upload_status(page, "long.txt", "complete")
    )

    # What the API refuses, it says why, and the page shows its words.
    await upload(page, "notes.docx", "application/octet-stream", b"PK\x03\x04 not parsed")
    assert await upload_status(page, "notes.docx", "failed") == unsupported("notes.docx")
    await upload(page, "empty.md", "text/markdown", b"  \n")
    assert await upload_status(page, "empty.md", "failed") == "empty.md: the file is empty"

    documents = {d["source"]: d for d in await stack.client.documents()}
    assert documents["kettles.html"]["format"] == "html"
    assert documents["samovar.pdf"]["format"] == "pdf"
    assert documents["samovar.pdf"]["status"] == "indexed"
    await ask(page, "What keeps water hot all day?")
    await page.wait_for_selector(ANSWER_DONE)
    assert "samovar.pdf" in str(await page.text_content("#sources"))


async def test_the_service_panel_folds_into_the_side_column(stack: Stack, watched: Watched) -> None:
    page = watched.page
    await page.goto(stack.base_url)
    assert await page.locator("header #service, header #stat-workers").count() == 0
    assert await page.locator("aside #service").count() == 1
    # Folded: its summary says the essentials; the figures wait.
    note = page.locator("#service-note")
    await page.wait_for_function(
        "() => document.getElementById('service-note').textContent === '1 worker · 0 queued'"
    )
    assert await note.is_visible()
    assert await page.is_hidden("#stat-workers")
    await page.click("#service summary")
    assert await page.is_visible("#stat-workers")
    assert await page.text_content("#stat-workers") == "1"
    # This browser remembers it open (its `toggle` event, a moment after the click, saves it).
    await remembered(page, "open")
    await page.reload()
    await page.wait_for_selector("#service[open]")
    assert await page.is_visible("#stat-queue")
    await page.click("#service summary")
    await remembered(page, "closed")
    await page.reload()
    await page.wait_for_selector("#service:not([open])")


async def remembered(page: Page, state: str) -> None:
    await page.wait_for_function(
        f"() => localStorage.getItem('rag-async:service-open') === '{state}'"
    )


async def test_the_panel_says_when_no_worker_runs_while_folded(
    settings: Any, watched: Watched
) -> None:
    page = watched.page
    async with running_stack(settings, with_worker=False) as stack:
        await page.goto(stack.base_url)
        note = page.locator("#service-note.warning", has_text="No worker is running")
        await note.wait_for()
        assert await page.is_hidden("#stat-workers")


async def test_the_welcome_card_shows_collections_and_questions_to_try(
    valkey: Any, tmp_path: Any, llm: Any, watched: Watched
) -> None:
    page = watched.page
    settings = make_settings(valkey, tmp_path)  # the offline answerer: it quotes its sources
    async with running_stack(settings) as stack:
        await ingest(stack)  # "Tea", in the default collection
        await ingest(stack, "# Kettles\n\nA gooseneck kettle pours slowly.\n", title="Kettles")
        rice = "# Rice cookers\n\nA rice cooker stops heating when the water is gone.\n"
        accepted = await add_document(
            stack.client, rice, title="Rice cookers", source="rice.md", collection="kitchen"
        )
        _ = [event async for event in stack.client.follow(accepted["job_id"])]

        chats: list[dict[str, Any]] = []
        page.on(
            "request",
            lambda r: (
                chats.append(json.loads(r.post_data or "{}"))
                if r.method == "POST" and r.url.endswith("/chat")
                else None
            ),
        )
        await page.goto(stack.base_url)
        welcome = page.locator("#welcome")
        await welcome.wait_for()
        await page.wait_for_selector("#collection-list li >> nth=1")
        listed = await page.locator("#collection-list li").all_text_contents()
        assert listed == ["default 2 documents", "kitchen 1 document"]
        options = await page.locator("#collection option").all_text_contents()
        assert options == ["default (2 documents)", "kitchen (1 document)", "New collection…"]
        examples = await page.locator("#examples button").all_text_contents()
        assert len(examples) == 3
        assert {
            title
            for title in ("Tea", "Kettles", "Rice cookers")
            if any(title in example for example in examples)
        } == {"Tea", "Kettles", "Rice cookers"}

        # An example is asked in its own collection, and the welcome gives way to the answer.
        await page.locator("#examples button", has_text="Rice cookers").click()
        await page.wait_for_selector(ANSWER_DONE)
        assert chats[-1]["collection"] == "kitchen"
        assert await page.input_value("#collection") == "kitchen"
        assert await welcome.is_hidden()
        assert "rice.md" in str(await page.text_content("#sources"))

        # The picker sends the chosen collection.
        await page.select_option("#collection", "default")
        await ask(page, "How does a gooseneck kettle pour?")
        await page.wait_for_selector(ANSWER_DONE)
        assert chats[-1]["query"] == "How does a gooseneck kettle pour?"
        assert chats[-1]["collection"] == "default"

        # A new collection, for an upload.
        await page.select_option("#collection", label="New collection…")
        await page.fill("#collection-new", "notes")
        await upload(page, "note.md", "text/markdown", b"# Note\n\nSteep it twice.\n")
        await upload_status(page, "note.md", "complete")
        documents = await stack.client.documents("notes")
        assert [d["source"] for d in documents] == ["note.md"]
        # It is one of the picker's collections now, and the chosen one.
        await page.wait_for_selector("#collection option[value=notes]", state="attached")
        assert await page.input_value("#collection") == "notes"
        assert await page.is_hidden("#collection-new")

        # Without a job in the address, the welcome card again, on the last collection chosen.
        await page.goto(stack.base_url)
        await welcome.wait_for()
        assert await page.is_hidden("#answer-card")
        await page.wait_for_selector("#collection option[value=notes]", state="attached")
        assert await page.input_value("#collection") == "notes"


async def test_the_welcome_card_says_how_to_begin_when_there_is_nothing(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    await page.goto(stack.base_url)
    await page.wait_for_selector("#welcome-empty:not([hidden])")
    assert "Add documents" in str(await page.text_content("#welcome-empty"))
    assert await page.is_hidden("#examples-title")
    assert await page.locator("#collection option").all_text_contents() == [
        "default",
        "New collection…",
    ]


async def test_the_welcome_card_follows_documents_still_being_added(
    settings: Any, watched: Watched
) -> None:
    """As just after `rag-async up`, while the demo corpus is ingested: the card says so, and
    shows the documents and questions about them once they are in, without a reload."""
    page = watched.page
    async with running_stack(settings, with_worker=False) as stack:
        await add_document(stack.client, "# Tea\n\nGreen tea wants 80 degrees.\n", title="Tea")
        await page.goto(stack.base_url)
        listed = page.locator("#collection-list li")
        await listed.filter(has_text="default 0 documents · 1 being added").wait_for()
        assert await page.is_hidden("#examples-title")
        async with running_worker(settings):
            await listed.filter(has_text="default 1 document").wait_for(timeout=10_000)
            await page.locator("#examples button", has_text="Tea").wait_for()


async def test_every_question_the_welcome_card_suggests_is_answered_from_its_document(
    valkey: Any, tmp_path: Any, watched: Watched
) -> None:
    page = watched.page
    settings = make_settings(valkey, tmp_path)  # the offline answerer: it quotes its sources
    notes = {
        "Garden notes": "The tomatoes went in on the south bed in early May.\n\nThe compost "
        "heap is turned once a month.\n",
        "Office map": "The office takes the third floor.\n\nThe kitchen is at the end of the "
        "east corridor.\n",
        "Bread recipe": "Mix the flour, salt, yeast and warm water into a soft dough.\n\nBake "
        "it at 220 °C for 30 minutes.\n",
    }
    async with running_stack(settings) as stack:
        # Among passages that share the questions' own words ("overview", "notes", "points").
        for title, source, text in demo_documents():
            if source in ("tutorial-inputoutput.md", "tutorial-errors.md"):
                await ingest(stack, text, title=title)
        for title, text in notes.items():
            await ingest(stack, f"# {title}\n\n{text}", title=title)
        long_title = "A title far too long to be named whole in a question " * 2
        await ingest(stack, "The long one says little.\n", title=long_title.strip())

        await page.goto(stack.base_url)
        await page.wait_for_selector("#examples button >> nth=2")
        examples = await page.locator("#examples button").all_text_contents()
        assert not [e for e in examples if "far too long" in e], "a title cut names nothing"
        for title in notes:
            suggested = [example for example in examples if title in example]
            assert len(suggested) == 1, (title, examples)
            await page.goto(stack.base_url)
            await page.locator("#examples button", has_text=title).click()
            await page.wait_for_selector(ANSWER_DONE)
            answer = str(await page.text_content("#answer"))
            assert answer.startswith("From the documents:"), (suggested, answer)
            assert notes[title].split(".")[0] in answer, (suggested, answer)
            # Every passage it cites is of that document.
            cited = {int(n) for n in re.findall(r"\[(\d+)\]", answer)}
            assert cited, answer
            for n in cited:
                listed = await page.locator(f"#sources li[value='{n}']").text_content()
                assert f"{title}.md" in str(listed), (suggested, n, listed)
            assert await page.text_content("#sources-title") == "Sources"

        # Nothing relevant: the list says the passages are only the closest ones.
        await ask(page, "Who painted the kitchen of the office in Paris in 1998?")
        await shows_question(page, "Who painted the kitchen of the office in Paris in 1998?")
        await page.wait_for_selector(ANSWER_DONE)
        assert str(await page.text_content("#answer")).startswith("Nothing relevant")
        assert await page.is_visible("#sources-section")
        heading = await page.text_content("#sources-title")
        assert heading == "Closest passages (the answer cites none of them)"
