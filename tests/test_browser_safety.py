"""Browser safety (rag_async/api/browser.py): what a page of another site, or one that DNS
rebinding puts on our address, cannot make the API do, and the headers every response carries.
Against the real app under uvicorn and a real Valkey; what only a browser does (forms, no-cors
fetches, CORS, framing, the pages' policies) in Debian's chromium driven by Playwright, with
the other site a real HTTP server on another port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from rag_async.api.browser import allowed_hosts
from rag_async.config import Settings
from rag_async.store.keys import Keys
from rag_async.store.queue import JobQueue
from tests.conftest import running_api

UNKNOWN_JOB = "0123456789abcdef" * 2
QUESTION = b'{"query": "how long does green tea brew?"}'
CHROMIUM = Path("/usr/bin/chromium")
HAS_CHROMIUM = CHROMIUM.exists()


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app under uvicorn, no worker: whatever is accepted stays in the queue."""
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def queued(settings: Settings) -> int:
    """Jobs waiting in both queues, and so accepted."""
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(settings.redis_url or "")
    try:
        queue = JobQueue(redis, keys)  # waiting in a key's list or on arq's queue
        return await queue.size("answer") + await queue.size("ingest")
    finally:
        await redis.aclose()


def assert_refused(response: httpx.Response, status: int, code: str, *needles: str) -> None:
    """The one error shape, saying why."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", response.headers
    error = response.json()["error"]
    assert error["code"] == code, error
    for needle in needles:
        assert needle.lower() in error["message"].lower(), (needle, error["message"])


# --- content types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "named"),
    [
        # What a page of any site may send without a preflight: a form, a no-cors fetch.
        ("POST", "/chat", {"content-type": "text/plain"}, QUESTION, "text/plain"),
        ("POST", "/chat", {"content-type": "text/plain;charset=UTF-8"}, QUESTION, "text/plain"),
        # What `curl -d` sends.
        (
            "POST",
            "/chat",
            {"content-type": "application/x-www-form-urlencoded"},
            QUESTION,
            "x-www-form-urlencoded",
        ),
        ("POST", "/chat", {}, QUESTION, "no content-type"),
        ("POST", "/documents", {"content-type": "text/plain"}, b'{"text": "tea"}', "text/plain"),
        # A form's content type on an empty body (a bodiless form POST) is refused as well.
        ("POST", f"/dead-letters/{UNKNOWN_JOB}/requeue", {"content-type": "text/plain"}, b"", ""),
        ("DELETE", f"/jobs/{UNKNOWN_JOB}", {"content-type": "text/plain"}, b"x", "text/plain"),
    ],
)
async def test_a_write_neither_json_nor_multipart_is_415_and_enqueues_nothing(
    api: httpx.AsyncClient,
    settings: Settings,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    named: str,
) -> None:
    response = await api.request(method, path, content=body, headers=headers)
    assert_refused(response, 415, "unsupported_media_type", "application/json", named)
    assert await queued(settings) == 0


async def test_json_multipart_and_bodiless_writes_pass(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    json = {"content-type": "application/json; charset=utf-8"}
    assert (await api.post("/chat", content=QUESTION, headers=json)).status_code == 202
    upload = await api.post("/documents", files=[("files", ("tea.md", b"# Tea\n\nBrew it."))])
    assert upload.status_code == 202, upload.text
    # No body and no content type (what `curl -X POST` and the Python client send): the route
    # answers.
    requeue = await api.post(f"/dead-letters/{UNKNOWN_JOB}/requeue")
    assert requeue.json()["error"]["code"] == "not_found", requeue.text
    assert await queued(settings) == 2


# --- origins --------------------------------------------------------------------------------


async def test_a_request_from_a_foreign_origin_is_refused(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    own = str(api.base_url).rstrip("/")
    port = api.base_url.port
    json = {"content-type": "application/json"}
    foreign = ["https://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"https{own[4:]}"]
    for origin in foreign:
        response = await api.post("/chat", content=QUESTION, headers={**json, "origin": origin})
        assert_refused(response, 403, "forbidden_origin", origin, "RAG_CORS_ORIGINS")
        read = await api.get("/stats", headers={"origin": origin})
        assert_refused(read, 403, "forbidden_origin")
    assert await queued(settings) == 0
    # The API's own page (its origin is the request's scheme and Host) is welcome.
    for origin in (own, own.upper(), f"http://localhost:{port}"):
        headers = {**json, "origin": origin, "host": origin.lower().removeprefix("http://")}
        response = await api.post("/chat", content=QUESTION, headers=headers)
        assert response.status_code == 202, (origin, response.text)
        assert "access-control-allow-origin" not in response.headers
    assert await queued(settings) == 3


async def test_a_listed_origin_is_served_with_cors(settings: Settings) -> None:
    settings = settings.model_copy(
        update={"cors_origins": "https://App.example/, http://localhost:3000"}
    )
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        preflight = await http.options(
            "/chat",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed and "idempotency-key" in allowed

        origin = {"origin": "http://localhost:3000"}
        response = await http.post("/chat", json={"query": "tea?"}, headers=origin)
        assert response.status_code == 202, response.text
        assert response.headers["access-control-allow-origin"] == "http://localhost:3000"
        # Its errors are readable too.
        shed = await http.get(f"/jobs/{UNKNOWN_JOB}", headers=origin)
        assert shed.status_code == 404
        assert shed.headers["access-control-allow-origin"] == "http://localhost:3000"

        other = {"origin": "https://evil.example", "access-control-request-method": "POST"}
        assert_refused(await http.options("/chat", headers=other), 403, "forbidden_origin")
        refused = await http.post("/chat", json={"query": "tea?"}, headers=other)
        assert_refused(refused, 403, "forbidden_origin")
    assert await queued(settings) == 1


# --- hosts ----------------------------------------------------------------------------------


async def test_a_rebinding_host_is_refused_but_probes_answer(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    port = api.base_url.port
    for host in ("evil.example", f"evil.example:{port}", "localhost.evil.example", "10.0.0.7"):
        for method, path in (("GET", "/stats"), ("GET", "/"), ("POST", "/chat")):
            response = await api.request(
                method,
                path,
                content=QUESTION,
                headers={"host": host, "content-type": "application/json"},
            )
            assert_refused(response, 400, "invalid_host", host, "RAG_ALLOWED_HOSTS")
        # Orchestrators probe by the pod's IP.
        assert (await api.get("/healthz", headers={"host": host})).status_code == 200
        assert (await api.get("/readyz", headers={"host": host})).status_code == 200
        # Without keys, /metrics is the local user's: behind the check like the rest.
        assert_refused(await api.get("/metrics", headers={"host": host}), 400, "invalid_host")
    assert await queued(settings) == 0
    for host in (f"localhost:{port}", f"LOCALHOST:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert (await api.get("/stats", headers={"host": host})).status_code == 200, host


async def test_with_keys_prometheus_scrapes_metrics_by_the_pods_address(
    settings: Settings,
) -> None:
    # /metrics then needs an admin key, which a rebinding page cannot send.
    settings = settings.model_copy(
        update={
            "api_keys": SecretStr("alice=user-secret-0123456789"),
            "admin_keys": SecretStr("ops=admin-secret-0123456789"),
        }
    )
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        pod = {"host": "10.0.0.7:8000"}
        admin = {**pod, "authorization": "Bearer admin-secret-0123456789"}
        scraped = await http.get("/metrics", headers=admin)
        assert scraped.status_code == 200 and "rag_queue_depth" in scraped.text
        assert (await http.get("/metrics", headers=pod)).status_code == 401
        assert_refused(await http.get("/stats", headers=admin), 400, "invalid_host")


async def test_the_allowed_hosts_are_a_setting(settings: Settings) -> None:
    settings = settings.model_copy(update={"allowed_hosts": "api, *.rag.example"})
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        for host in ("api:8000", "eu.rag.example", "API"):
            assert (await http.get("/stats", headers={"host": host})).status_code == 200, host
        for host in ("localhost", "rag.example", "evilrag.example", "api.evil"):
            assert_refused(await http.get("/stats", headers={"host": host}), 400, "invalid_host")


def test_the_default_hosts_are_loopback_and_the_host_listened_on(settings: Settings) -> None:
    loopback = ["localhost", "127.0.0.1", "::1"]
    for host, expected in [
        ("127.0.0.1", loopback),
        ("localhost", loopback),
        # What `rag-async up` prints and the CLI calls (http://RAG_HOST:RAG_PORT).
        ("0.0.0.0", [*loopback, "0.0.0.0"]),
        ("::", [*loopback, "::"]),
        ("192.168.1.20", [*loopback, "192.168.1.20"]),
        ("Rag.Lan", [*loopback, "rag.lan"]),
    ]:
        assert allowed_hosts(settings.model_copy(update={"host": host})) == expected, host


# --- headers --------------------------------------------------------------------------------


def assert_safety_headers(response: httpx.Response, *, docs: bool = False) -> None:
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") == "no-referrer", where
    assert headers.get("x-frame-options") == "DENY", where
    policy = [part.strip() for part in headers.get("content-security-policy", "").split(";")]
    assert "frame-ancestors 'none'" in policy, where
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy, where
    if not docs:
        assert "script-src 'self'" in policy and "default-src 'self'" in policy, where
        assert "unsafe-inline" not in str(policy), where


async def test_every_response_carries_the_safety_headers(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    page = await api.get("/")
    assert page.status_code == 200 and "<html" in page.text
    assert_safety_headers(page)
    vendored = ("/static/vendor/marked.esm.js", "/static/vendor/purify.es.js")
    for path in ("/static/app.js", "/static/style.css", *vendored, "/openapi.json", "/healthz"):
        response = await api.get(path)
        assert response.status_code == 200, path
        assert_safety_headers(response)
    for path in vendored:  # module scripts run only when served as JavaScript
        assert (await api.get(path)).headers["content-type"].startswith("text/javascript"), path
    not_found = await api.get("/no/such/route")
    assert_refused(not_found, 404, "not_found")
    assert_safety_headers(not_found)
    assert_safety_headers(await api.get("/static/missing.js"))
    assert_safety_headers(await api.post("/chat", content=QUESTION))
    assert_safety_headers(await api.get("/stats", headers={"host": "evil.example"}))
    assert_safety_headers(await api.get("/stats", headers={"origin": "https://evil.example"}))

    # An unexpected error's 500 comes from Starlette's outermost middleware: headers too.
    redis = Redis.from_url(settings.redis_url or "")
    try:
        await redis.set(Keys(settings.key_prefix).job("f" * 32), "not a hash")
    finally:
        await redis.aclose()
    failed = await api.get(f"/jobs/{'f' * 32}")
    assert_refused(failed, 500, "internal_error")
    assert_safety_headers(failed)

    # The interactive docs load Swagger UI from the API (tests/test_api_docs.py): a policy of
    # their own (inline styles), no framing, no other host.
    docs = await api.get("/docs")
    assert docs.status_code == 200
    assert_safety_headers(docs, docs=True)
    assert "script-src 'self';" in docs.headers["content-security-policy"]
    assert "http" not in docs.headers["content-security-policy"]


# --- in a browser ---------------------------------------------------------------------------


@contextmanager
def other_site(pages: dict[str, str]) -> Iterator[str]:
    """Another site: a real HTTP server on another port serving `pages` ({path: html})."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "not here").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # "localhost", where the API is reached as 127.0.0.1: another site, not only another
        # origin.
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAS_CHROMIUM:
        pytest.skip("no /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            headless=True,
        )
        yield launched
        await launched.close()


class Tab:
    """A page in a fresh browser context, with what the browser said about it: its console
    (where Chromium reports what a Content-Security-Policy refused) and the statuses of the
    API's answers (seen even for the opaque answers of no-cors requests)."""

    def __init__(self, page: Any, api: str) -> None:
        self.page = page
        self.console: list[str] = []
        self.answers: list[tuple[str, str, int]] = []
        page.on("console", lambda message: self.console.append(message.text))
        page.on("response", lambda r: self._on_response(r) if r.url.startswith(api) else None)

    def _on_response(self, response: Any) -> None:
        self.answers.append((response.request.method, response.url, response.status))

    @property
    def refused_by_policy(self) -> list[str]:
        return [text for text in self.console if "Content Security Policy" in text]


async def open_tab(browser: Any, api: str) -> Tab:
    context = await browser.new_context()
    context.set_default_timeout(15_000)
    return Tab(await context.new_page(), api)


ATTACK = """<!doctype html>
<title>a page of another site</title>
<form id="form" method="post" enctype="text/plain" action="{api}/chat" target="sink">
  <input name='{{"query": "how long does green tea brew' value='?"}}'>
</form>
<iframe name="sink"></iframe>
<iframe id="framed" src="{api}/"></iframe>
<script>
  const question = JSON.stringify({{query: "how long does green tea brew?"}});
  const upload = new FormData();
  upload.append("files", new Blob(["# Tea"], {{type: "text/markdown"}}), "tea.md");
  window.attempts = Promise.all([
    fetch("{api}/chat", {{method: "POST", mode: "no-cors", body: question}}),
    fetch("{api}/documents", {{method: "POST", mode: "no-cors", body: upload}}),
    fetch("{api}/chat", {{method: "POST", headers: {{"content-type": "application/json"}},
                         body: question}}).then(() => "read", () => "blocked"),
  ]).then((results) => results[2]);
  document.getElementById("form").submit();
</script>
"""


async def test_a_page_of_another_site_can_neither_post_nor_frame(
    settings: Settings, browser: Any
) -> None:
    async with running_api(settings) as api:
        with other_site({"/": ATTACK.format(api=api)}) as site:
            tab = await open_tab(browser, api)
            await tab.page.goto(site)
            # The JSON fetch needs a preflight, which the API refuses: the page reads nothing.
            assert await tab.page.evaluate("() => window.attempts") == "blocked"
            # The form, the no-cors fetches (text/plain, multipart): each reached the API and
            # was refused; none was enqueued.
            await eventually(lambda: len(posts(tab)) >= 3)
            assert set(posts(tab)) == {403}, tab.answers
            assert await queued(settings) == 0
            # And the API's page does not show in the other site's frame.
            await eventually(lambda: any("frame-ancestors" in t for t in tab.refused_by_policy))
            assert await tab.page.frame_locator("#framed").locator("#ask-form").count() == 0
            await tab.page.context.close()


def posts(tab: Tab) -> list[int]:
    """The statuses of the API's answers to the page's POSTs."""
    return [status for method, _, status in tab.answers if method == "POST"]


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) for what the browser reports through its events."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the condition lives in Playwright's events
            await asyncio.sleep(0.05)


CALLER = """<!doctype html>
<title>a listed site</title>
<script>
  window.answer = fetch("{api}/chat", {{
    method: "POST",
    headers: {{"content-type": "application/json"}},
    body: JSON.stringify({{query: "how long does green tea brew?"}}),
  }}).then((response) => response.json());
</script>
"""


async def test_a_listed_sites_page_calls_the_api_with_cors(
    settings: Settings, browser: Any
) -> None:
    pages: dict[str, str] = {}
    with other_site(pages) as site:
        listed = settings.model_copy(update={"cors_origins": site})
        async with running_api(listed) as api:
            pages["/"] = CALLER.format(api=api)
            with other_site(pages) as unlisted:
                tab = await open_tab(browser, api)
                await tab.page.goto(unlisted)
                with pytest.raises(Exception, match="Failed to fetch"):
                    await tab.page.evaluate("() => window.answer")
                await tab.page.context.close()
            assert await queued(settings) == 0
            tab = await open_tab(browser, api)
            await tab.page.goto(site)
            answer = await tab.page.evaluate("() => window.answer")
            assert len(answer["job_id"]) == 32, answer
            await tab.page.context.close()
    assert await queued(settings) == 1


async def test_the_page_and_the_docs_run_under_their_policies(
    settings: Settings, browser: Any
) -> None:
    async with running_api(settings) as api:
        tab = await open_tab(browser, api)
        await tab.page.goto(api)
        await tab.page.wait_for_selector("#ask-form")
        # Its modules ran (the service panel is filled in) and its style sheet applied.
        await tab.page.wait_for_function(
            "() => document.getElementById('service-note').textContent !== 'Loading…'"
        )
        rules = "() => [...document.styleSheets].map((s) => s.cssRules.length)"
        assert (await tab.page.evaluate(rules))[0] > 0
        # Markdown renders under the policy (marked and DOMPurify need nothing it forbids).
        rendered = await tab.page.evaluate(
            """async () => {
                const { markdownFragment } = await import('/static/markdown.js');
                const holder = document.createElement('div');
                holder.append(markdownFragment('**tea** and `code`\\n\\n- a list'));
                return holder.querySelectorAll('strong, code, li').length;
            }"""
        )
        assert rendered == 3
        assert tab.refused_by_policy == []

        # /docs: Swagger UI served by the API, started by a script of its own.
        await tab.page.goto(f"{api}/docs")
        await tab.page.wait_for_selector(".opblock-summary-path")
        assert tab.refused_by_policy == []
        await tab.page.context.close()
