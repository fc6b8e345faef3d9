"""A job's webhook as the API accepts it: the caller's URL or RAG_WEBHOOK_URL, checked."""

from __future__ import annotations

from rag_async.config import Settings
from rag_async.domain.job import WebhookDelivery, record_fields
from rag_async.webhooks.policy import HostPolicy, WebhookRefused


def webhook_fields(settings: Settings, url: str | None) -> dict[str, str]:
    """The record fields of a new job's webhook (none if neither the request nor the
    settings name a URL), or `WebhookRefused` (400) saying why the URL is not allowed."""
    url = url or settings.webhook_url
    if not url:
        return {}
    if settings.webhook_secret is None:
        raise WebhookRefused(
            "this service sends no webhooks: RAG_WEBHOOK_SECRET is not set", code="webhooks_off"
        )
    HostPolicy(settings.webhook_hosts).check_url(url)
    return record_fields(webhook=WebhookDelivery(url=url))
