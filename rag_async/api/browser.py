"""Browser safety: what a page on another site, or one that DNS rebinding puts on our address,
must not make the API do. Pure ASGI middleware, one concept each, outermost first:

- `SecurityHeaders`: every response, errors and static files too, carries a
  Content-Security-Policy (nothing loaded from elsewhere, no framing), nosniff, no referrer.
- `HostCheck`: the Host header must be one of the API's own names (DNS rebinding).
- `OriginCheck`: a request sent by a page of another origin is refused, unless
  RAG_CORS_ORIGINS lists that origin (Starlette's CORSMiddleware then answers for it).
- `WriteContentTypes`: a write's body is JSON or multipart. A page of any site can send a
  `text/plain` or form-encoded body without asking (no CORS preflight); JSON needs one.

A refusal is the one JSON error shape of api/errors.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_async.api.errors import error_response
from rag_async.config import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Probes of an orchestrator reach the pod by its IP, a name nobody can list in advance; what
# these answer (up, and the queue's depth) is no secret worth a rebinding attack.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# Prometheus scrapes a pod by its IP too. /metrics answers any Host only where it needs an
# admin key, which a rebinding page cannot send; without keys it stays behind the check.
SCRAPE_PATH = "/metrics"

# The web page (web/index.html) loads its own ES modules and style sheet, and nothing inline.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The /docs and /redoc pages (api/docs.py) load Swagger UI and ReDoc from this server, and no
# inline script; both set styles inline (React's style attributes, ReDoc's styled-components),
# and ReDoc searches in a worker it makes from a blob.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc"})

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_TYPES = ("application/json", "multipart/form-data")


def allowed_hosts(settings: Settings) -> list[str]:
    """RAG_ALLOWED_HOSTS, or the loopback names and RAG_HOST: the URL that `rag-async up`
    prints and the CLI calls is http://RAG_HOST:RAG_PORT, even when RAG_HOST is 0.0.0.0 (an
    address, which no rebinding page can send as its Host)."""
    if settings.allowed_hosts is not None:
        return [_host_name(name) for name in _listed(settings.allowed_hosts)]
    bound = _host_name(settings.host)
    return [*LOOPBACK_NAMES, *([bound] if bound and bound not in LOOPBACK_NAMES else [])]


def cors_origins(settings: Settings) -> list[str]:
    """RAG_CORS_ORIGINS as a list, written as browsers send them (`https://app.example/` is
    `https://app.example`)."""
    return [origin.rstrip("/").lower() for origin in _listed(settings.cors_origins or "")]


class SecurityHeaders:
    """Sets the browser's safety headers on every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] in DOCS_PATHS else PAGE_POLICY
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),  # frame-ancestors, for browsers that predate it
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Answers 400 `invalid_host` unless the Host header names this API (probes excepted).

    A DNS-rebinding page first resolves its own name to the attacker's server, then to
    127.0.0.1: the browser then takes the local API for the page's own origin, and only the
    Host header (the attacker's name) tells the two apart.
    """

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], keyed: bool) -> None:
        self.app = app
        self.hosts = [host.lower() for host in hosts]
        self.any = "*" in self.hosts
        self.any_host_paths = PROBE_PATHS | ({SCRAPE_PATH} if keyed else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any or scope["path"] in self.any_host_paths:
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if self._allowed(_host_name(host)):
            await self.app(scope, receive, send)
            return
        shown = repr(host[:100]) if host else "no Host header"
        response = error_response(
            400,
            "invalid_host",
            f"this API does not answer to the name {shown}; the names it answers to are set "
            "by RAG_ALLOWED_HOSTS (comma-separated)",
        )
        await response(scope, receive, send)

    def _allowed(self, name: str) -> bool:
        return any(
            name == host or (host.startswith("*.") and name.endswith(host[1:]))
            for host in self.hosts
        )


class OriginCheck:
    """Answers 403 `forbidden_origin` to a request whose Origin header is neither the API's
    own origin (the scheme and Host of the request) nor a listed one.

    Browsers send Origin with every cross-origin request and every non-GET one; other
    clients (curl, the Python client) send none and are not concerned.
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str]) -> None:
        self.app = app
        listed = list(origins)
        self.any = "*" in listed
        self.origins = {_origin(origin) for origin in listed} - {None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.any:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        own = _origin(f"{scope['scheme']}://{headers.get('host', '')}")
        sender = _origin(origin)
        if sender is not None and (sender == own or sender in self.origins):
            await self.app(scope, receive, send)
            return
        response = error_response(
            403,
            "forbidden_origin",
            f"requests from pages of {origin[:100]!r} are refused; RAG_CORS_ORIGINS lists the "
            "origins whose pages may call this API",
        )
        await response(scope, receive, send)


class WriteContentTypes:
    """Answers 415 `unsupported_media_type` to a write whose body (or content type, even with
    an empty body) is neither `application/json` nor `multipart/form-data`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type")
        media_type = (content_type or "").partition(";")[0].strip().lower()
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if media_type in BODY_TYPES or (content_type is None and not has_body):
            await self.app(scope, receive, send)
            return
        got = f"Content-Type {content_type[:100]!r}" if content_type else "no Content-Type"
        response = error_response(
            415,
            "unsupported_media_type",
            "a body must be JSON sent as Content-Type: application/json (curl --json '…'), "
            f"or a multipart/form-data upload; this request has {got}",
        )
        await response(scope, receive, send)


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _host_name(host: str) -> str:
    """The name in a Host header or setting, without port or IPv6 brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, for comparing; None for one that cannot be read
    (such as "null", sent by sandboxed frames and local files)."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, -1)
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return (parts.scheme, parts.hostname.rstrip("."), port)
