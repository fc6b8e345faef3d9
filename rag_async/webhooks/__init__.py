"""Webhooks: a job's end POSTed, signed (Standard Webhooks), to the URL it was given.

`accept.py` checks a URL when a job is accepted; `store.py` queues the delivery when the job
ends and keeps its state on the job record; `delivery.py` makes one try (`policy.py` says where
it may go, `signing.py` signs it, `message.py` says what); jobs/webhook.py is the arq job
that retries and dead-letters.
"""

from .accept import webhook_fields
from .delivery import Courier, Sent
from .message import payload
from .policy import HostPolicy, WebhookRefused
from .store import DELIVERY_FUNCTION, Webhooks

__all__ = [
    "DELIVERY_FUNCTION",
    "Courier",
    "HostPolicy",
    "Sent",
    "WebhookRefused",
    "Webhooks",
    "payload",
    "webhook_fields",
]
