"""One try at delivering a webhook: resolve and check the host's addresses, POST the signed
message to the address checked (never to a second lookup's), follow no redirect, read at
most a short excerpt of the answer, all within one time limit."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import httpx
import structlog

from rag_async.config import Settings
from rag_async.domain.job import WebhookAttempt
from rag_async.providers.retry import retry_after
from rag_async.webhooks.policy import HostPolicy, IPAddress, Target, WebhookRefused
from rag_async.webhooks.signing import Signer

log = structlog.get_logger(__name__)

# Another try may mend these: the receiver timed out, is rate limiting, or failed. Any other
# status (a redirect, 4xx) says the request itself is unwelcome and would be again.
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})

_READ_LIMIT = 1024  # bytes of the answer read at most: the excerpt is cut from them
_EXCERPT = 200  # characters of the answer kept on the record, for a person to see why


@dataclass(frozen=True, slots=True)
class Sent:
    """How one try went, as recorded on the job, and whether another may go better."""

    attempt: WebhookAttempt
    delivered: bool = False
    retryable: bool = False
    retry_after: float | None = None


class Courier:
    """Delivers webhooks over its own HTTP client: no proxy from the environment (it would
    reach what the address checks refuse), no redirects, no kept-alive connections (each
    connection is made to the address just checked, for the name just checked)."""

    def __init__(self, policy: HostPolicy, signer: Signer, timeout: float) -> None:
        self._policy = policy
        self._signer = signer
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            trust_env=False,
            follow_redirects=False,
            timeout=timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Courier | None:
        """None without RAG_WEBHOOK_SECRET: no job can have been given a webhook then."""
        if settings.webhook_secret is None:
            return None
        policy = HostPolicy(settings.webhook_hosts)
        return cls(policy, Signer(settings.webhook_secret), settings.webhook_timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, url: str, message_id: str, body: str) -> Sent:
        at = time.time()
        try:
            async with asyncio.timeout(self._timeout):
                # The policy may have changed since the job was accepted.
                target = self._policy.check_url(url)
                addresses = await self._policy.addresses(target)
                return await self._post(target, addresses[0], message_id, body, at)
        except WebhookRefused as error:
            return Sent(WebhookAttempt(at=at, error=error.message))
        except TimeoutError:
            error_text = f"no answer within {self._timeout:g} s"
            return Sent(WebhookAttempt(at=at, error=error_text), retryable=True)
        except (httpx.HTTPError, OSError) as error:
            return Sent(WebhookAttempt(at=at, error=_describe(error)), retryable=True)
        except Exception as error:
            # As for jobs (jobs/outcome.py): a bug may be transient, and must never leave the
            # delivery pending for good; its last try dead-letters it.
            log.exception("unexpected error delivering a webhook")
            error_text = f"internal error: {type(error).__name__}"
            return Sent(WebhookAttempt(at=at, error=error_text), retryable=True)

    async def _post(
        self, target: Target, address: IPAddress, message_id: str, body: str, at: float
    ) -> Sent:
        headers = self._signer.headers(message_id, body, at)
        headers |= {
            "host": httpx.URL(target.url).netloc.decode("ascii"),
            "user-agent": "rag-async-webhooks",
            "accept-encoding": "identity",  # the excerpt is read raw, never decompressed
        }
        # Checked for the name, so certificates are too (and SNI names it).
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self._http.build_request(
            "POST",
            httpx.URL(target.url).copy_with(host=str(address)),
            content=body.encode(),
            headers=headers,
            extensions=extensions,
        )
        response = await self._http.send(request, stream=True)
        try:
            excerpt = await _excerpt(response)
        finally:
            await response.aclose()
        status = response.status_code
        if 200 <= status < 300:
            return Sent(WebhookAttempt(at=at, status=status), delivered=True)
        error = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"
        if response.is_redirect:
            location = response.headers.get("location", "")[:_EXCERPT]
            error = f"HTTP {status}: redirects are not followed (to {location})"
        return Sent(
            WebhookAttempt(at=at, status=status, error=error),
            retryable=status in RETRYABLE_STATUSES,
            retry_after=retry_after(response.headers),
        )


async def _excerpt(response: httpx.Response) -> str:
    """The start of the answer's body, as printable text: never more is read or kept."""
    read = bytearray()
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= _READ_LIMIT:
            break
    text = bytes(read[:_READ_LIMIT]).decode("utf-8", errors="replace")
    return re.sub(r"[\x00-\x20\x7f-\x9f]+", " ", text).strip()[:_EXCERPT]


def _describe(error: Exception) -> str:
    detail = str(error) or type(error).__name__
    return f"{type(error).__name__}: {detail}"[:_EXCERPT]
