"""Signing a webhook as Standard Webhooks says (https://www.standardwebhooks.com), with the
`standardwebhooks` package, so that any receiver's library of that spec verifies it."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook


class Signer:
    """The headers of one signed message, from RAG_WEBHOOK_SECRET (`whsec_<base64>`)."""

    def __init__(self, secret: SecretStr) -> None:
        self._webhook = Webhook(secret.get_secret_value())

    def headers(self, message_id: str, body: str, at: float) -> dict[str, str]:
        """`webhook-id` stays the same on every try of a message, so a receiver can drop a
        repeat; `webhook-timestamp` is this try's, which receivers check for freshness."""
        timestamp = datetime.fromtimestamp(int(at), tz=UTC)
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at)),
            "webhook-signature": self._webhook.sign(message_id, timestamp, body),
            "content-type": "application/json",
        }
