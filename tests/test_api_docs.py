"""The interactive API docs offline: /docs (Swagger UI) and /redoc (ReDoc) load everything from
the API itself, under a policy that allows no other host and no inline script, and render
every operation in a real Chromium whose requests to anything but 127.0.0.1 fail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import BaseModel

from rag_async.api import create_app
from rag_async.api.docs import ASSETS
from rag_async.config import Settings
from tests.conftest import running_api

pytestmark = pytest.mark.timeout(90)

ASSET_TYPES = {
    "swagger-ui-bundle.js": "javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "javascript",
    "favicon.png": "image/png",
}


def policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = response.headers["content-security-policy"].split(";")
    return {part.split()[0]: part.split()[1:] for part in directives if part.strip()}


async def test_the_docs_pages_load_their_assets_from_the_api(settings: Settings) -> None:
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api) as http:
        for path in ("/docs", "/redoc"):
            page = await http.get(path)
            assert page.status_code == 200, path
            # Nothing from another host, no inline script: every script has a local src.
            assert not re.search(r"(src|href)=\"(https?:)?//", page.text), page.text
            assert "<script>" not in page.text
            rules = policy(page)
            assert rules["script-src"] == ["'self'"], rules
            assert all(
                source in ("'self'", "'unsafe-inline'", "data:", "blob:", "'none'")
                for sources in rules.values()
                for source in sources
            ), rules
            for url in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
                asset = await http.get(url)
                assert asset.status_code == 200, url
        for name, media_type in ASSET_TYPES.items():
            asset = await http.get(f"/docs/assets/{name}")
            assert asset.status_code == 200, name
            assert media_type in asset.headers["content-type"], (name, asset.headers)
            assert asset.content == (ASSETS / name).read_bytes()
        assert (await http.get("/docs/assets/../../app.py")).status_code == 404


# --- in a browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from tests.support.browser import launched_browser

    async with launched_browser() as launched:
        yield launched


class OfflineTab:
    """A page whose requests to any host but 127.0.0.1 fail, as on a machine without the
    internet, with what it tried to reach, what it threw and what the policy refused."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.refused: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda m: self.refused.append(m.text) if "Content Security Policy" in m.text else None,
        )

    async def block_the_internet(self) -> None:
        async def route(route: Any) -> None:
            url = route.request.url
            if url.startswith(("data:", "blob:")) or urlsplit(url).hostname == "127.0.0.1":
                await route.continue_()
            else:
                self.outside.append(url)
                await route.abort("internetdisconnected")

        await self.page.context.route("**/*", route)


@pytest.fixture
async def tab(browser: Any) -> AsyncIterator[OfflineTab]:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    offline = OfflineTab(await context.new_page())
    await offline.block_the_internet()
    try:
        yield offline
    finally:
        await context.close()


def operations(schema: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item]


async def test_swagger_ui_renders_every_operation_offline(
    settings: Settings, tab: OfflineTab
) -> None:
    schema = create_app(settings).openapi()
    async with running_api(settings) as api:
        await tab.page.goto(f"{api}/docs")
        await tab.page.wait_for_selector(".opblock-summary-path")
        shown = await tab.page.eval_on_selector_all(
            ".opblock",
            """blocks => blocks.map((b) => [
                b.querySelector('.opblock-summary-method').textContent,
                b.querySelector('.opblock-summary-path').dataset.path])""",
        )
        assert sorted(map(tuple, shown)) == sorted(operations(schema))
        assert await tab.page.locator(".info .title").first.inner_text() != ""
        # An operation opens to its parameters and responses (Swagger UI's own code runs).
        await tab.page.locator(".opblock-summary", has_text="/chat").first.click()
        await tab.page.wait_for_selector(".opblock.is-open .responses-wrapper")
    assert tab.outside == []
    assert tab.errors == []
    assert tab.refused == []


async def test_redoc_renders_every_operation_offline(settings: Settings, tab: OfflineTab) -> None:
    schema = create_app(settings).openapi()
    async with running_api(settings) as api:
        await tab.page.goto(f"{api}/redoc")
        await tab.page.wait_for_selector("[data-section-id^='operation/']")
        rendered = await tab.page.locator("[data-section-id^='operation/']").count()
        assert rendered == len(operations(schema))
        assert await tab.page.get_by_text(schema["info"]["title"]).count() > 0
    assert tab.outside == []
    assert tab.errors == []
    # ReDoc always tries its maker's logo from their CDN (and hides it when that fails): the
    # policy refuses it before any request leaves, and nothing else.
    assert [text for text in tab.refused if "cdn.redoc.ly/redoc/logo-mini.svg" not in text] == []


async def test_every_request_bodys_example_is_valid_and_post_chats_is_accepted(
    settings: Settings,
) -> None:
    """What "Try it out" fills in works as it is: a made-up collection or webhook_url (what
    Swagger UI makes up from the schema without an example) is refused."""
    from rag_async.api.openai_compat import vector_store_bodies as bodies
    from rag_async.api.openai_compat.inputs import ChatCompletionsRequest, ResponsesRequest
    from rag_async.api.openai_compat.vector_store_search import VectorStoreSearchRequest
    from rag_async.domain.schemas import ChatRequest, DocumentIn, SearchRequest

    openai_files = (
        bodies.VectorStoreCreate,
        bodies.VectorStoreUpdate,
        bodies.VectorStoreFileCreate,
        bodies.VectorStoreFileUpdate,
        bodies.FileBatchCreate,
        VectorStoreSearchRequest,
    )
    native = (ChatRequest, DocumentIn, SearchRequest, ResponsesRequest, ChatCompletionsRequest)
    models: dict[str, type[BaseModel]] = {model.__name__: model for model in native + openai_files}
    document = create_app(settings).openapi()
    examples: dict[str, dict[str, Any]] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            schema = _resolved(document, body["schema"])
            assert schema.get("examples"), (method, path, "has no example")
            models[schema["title"]].model_validate(schema["examples"][0])
            examples[f"{method.upper()} {path}"] = schema["examples"][0]
    assert set(examples) >= {
        "POST /chat",
        "POST /search",
        "POST /documents",
        "POST /v1/chat/completions",
    }

    # No worker runs: a search is still queued when its (shortened) wait is up.
    settings = settings.model_copy(update={"search_wait": 0.1})
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api) as http:
        for operation in ("POST /chat", "POST /search", "POST /documents"):
            response = await http.post(operation.split()[1], json=examples[operation])
            assert response.status_code == 202, (operation, response.text)


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in schema:
        return schema
    found: dict[str, Any] = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return found


async def test_the_docs_pages_fit_a_phones_screen(settings: Settings) -> None:
    async with running_api(settings) as api, httpx.AsyncClient(base_url=api) as http:
        for path in ("/docs", "/redoc"):
            page = await http.get(path)
            assert '<meta name="viewport" content="width=device-width' in page.text, path
