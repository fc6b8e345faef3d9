"""Webhooks: a job's end POSTed, signed (Standard Webhooks), to the URL it was given.

`accept.py` checks a URL when a job is accepted; `delivery.py` makes one try (`policy.py` says
where it may go, `signing.py` signs it, `message.py` says what). The delivery's state on the
job record and its queuing are rag_async/store/webhooks.py's; worker/jobs/webhook.py is the
arq job that retries and dead-letters.
"""

from rag_async.webhooks.accept import webhook_fields
from rag_async.webhooks.delivery import Courier, Sent
from rag_async.webhooks.message import payload
from rag_async.webhooks.policy import HostPolicy, WebhookRefused

__all__ = [
    "Courier",
    "HostPolicy",
    "Sent",
    "WebhookRefused",
    "payload",
    "webhook_fields",
]
