"""Webhooks, end to end: a real API and worker on a real Valkey POST to a receiver that this
test serves on loopback, which verifies every signature with the `standardwebhooks` library
(the spec's own implementation, not ours)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rag_async.config import Settings
from rag_async.domain.job import JobStatus, record_fields
from rag_async.local.valkey import EmbeddedValkey, free_port
from rag_async.store.keys import Keys
from rag_async.webhooks import HostPolicy, WebhookRefused
from rag_async.webhooks.policy import Target, is_public
from tests.conftest import Stack, keyed_settings, make_settings, running_stack
from tests.support.openai_server import Fault

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any]  # as the receiver's library verified and parsed it


@dataclass
class Receiver:
    """A webhook receiver: answers `answers` in order, then `then`; keeps what it verified."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    then: int = 204
    received: list[Delivery] = field(default_factory=list)
    unverified: int = 0

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except Exception:
            self.unverified += 1
            return Response(status_code=401)
        self.received.append(Delivery(request.url.path, headers, body, payload))
        status = self.answers.pop(0) if self.answers else self.then
        if 300 <= status < 400:
            return Response(status_code=status, headers={"location": "/elsewhere"})
        return Response(b"x" * 10_000 if status >= 500 else b"", status_code=status)


@asynccontextmanager
async def receiving(host: str = "127.0.0.1") -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    receiver.url = f"http://{host}:{port}/hook"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


def hook_settings(valkey: EmbeddedValkey, tmp_path: Path, llm: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SECRET,
        "webhook_hosts": "127.0.0.1",
        "webhook_max_tries": 3,
        **overrides,
    }
    return make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="test-key", **values
    )


async def ask(stack: Stack, url: str | None, **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        body = {"query": "How long does green tea brew?", **extra}
        if url is not None:
            body["webhook_url"] = url
        answer = await http.post("/chat", json=body)
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


async def job(stack: Stack, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        answer = await http.get(f"/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def settled(stack: Stack, job_id: str, within: float = 20.0) -> dict[str, Any]:
    """The job once its webhook is delivered or has failed."""
    deadline = time.monotonic() + within
    while True:
        view = await job(stack, job_id)
        if view["webhook"] is not None and view["webhook"]["state"] != "pending":
            return view
        assert time.monotonic() < deadline, f"webhook still pending: {view['webhook']}"
        await asyncio.sleep(0.05)


async def reaches_stage(stack: Stack, job_id: str, stage: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (await job(stack, job_id))["stage"] != stage:
        assert time.monotonic() < deadline, f"the job never reached {stage}"
        await asyncio.sleep(0.02)


async def test_a_questions_webhook_is_signed_retried_after_a_500_and_delivered(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver, running_stack(settings) as stack:
        receiver.answers = [500]
        accepted = await ask(stack, receiver.url)
        view = await settled(stack, accepted["job_id"])
    assert view["status"] == "complete"
    webhook = view["webhook"]
    assert webhook["state"] == "delivered" and webhook["url"] == receiver.url
    assert [a["status"] for a in webhook["attempts"]] == [500, 204]
    # The receiver's body is kept only as a short excerpt.
    assert webhook["attempts"][0]["error"].startswith("HTTP 500: xxx")
    assert len(webhook["attempts"][0]["error"]) < 300
    assert receiver.unverified == 0 and len(receiver.received) == 2
    first, second = receiver.received
    # One message, tried twice: the same id and the same bytes.
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    assert second.payload["type"] == "job.completed"
    assert second.payload["data"] == {
        "job_id": accepted["job_id"],
        "kind": "answer",
        "status": "complete",
        "error": None,
        "answer": view["answer"],
    }
    assert second.payload["timestamp"].endswith("Z")


async def test_a_documents_webhook_tells_its_document(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver, running_stack(settings) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            document = {"text": "# Tea\n\nGreen tea.", "title": "Tea", "webhook_url": receiver.url}
            accepted = (await http.post("/documents", json=document)).json()
            files = {"files": ("tea.md", b"# Tea\n\nBlack tea.", "text/markdown")}
            form = {"webhook_url": receiver.url}
            uploaded = (await http.post("/documents", files=files, data=form)).json()
        first = await settled(stack, accepted["job_id"])
        second = await settled(stack, uploaded["job_id"])
    assert first["webhook"]["state"] == second["webhook"]["state"] == "delivered"
    told = {d.payload["data"]["job_id"]: d.payload for d in receiver.received}
    assert told[accepted["job_id"]]["data"]["document_id"] == accepted["document_id"]
    assert told[uploaded["job_id"]]["data"]["kind"] == "ingest"


async def test_a_receiver_that_always_fails_ends_in_the_dead_letters(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm, webhook_max_tries=2)
    async with receiving() as receiver, running_stack(settings) as stack:
        receiver.then = 503
        accepted = await ask(stack, receiver.url)
        view = await settled(stack, accepted["job_id"])
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            dead = (await http.get("/dead-letters")).json()
            dropped = await http.delete(f"/dead-letters/webhooks/{accepted['job_id']}")
            dropped_again = await http.delete(f"/dead-letters/webhooks/{accepted['job_id']}")
            after_drop = (await http.get("/dead-letters")).json()
    assert view["status"] == "complete"  # the job stands, whatever its webhook's fate
    assert view["webhook"]["state"] == "failed"
    assert [a["status"] for a in view["webhook"]["attempts"]] == [503, 503]
    assert [entry["job_id"] for entry in dead["webhooks"]] == [accepted["job_id"]]
    assert dead["webhooks"][0]["attempts"] == 2
    assert dead["dead_letters"] == []  # the job itself is no dead letter: it is not run again
    assert dropped.status_code == 204 and dropped_again.status_code == 404
    assert after_drop["webhooks"] == []


async def test_a_client_error_is_not_retried(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver, running_stack(settings) as stack:
        receiver.then = 410
        view = await settled(stack, (await ask(stack, receiver.url))["job_id"])
    assert [a["status"] for a in view["webhook"]["attempts"]] == [410]
    assert view["webhook"]["state"] == "failed"


async def test_failed_and_cancelled_jobs_send_their_webhooks(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver:
        async with running_stack(settings, with_worker=False) as stack:
            queued = await ask(stack, receiver.url)  # no worker: the API cancels it
            assert (await stack.client.cancel(queued["job_id"]))["status"] == "cancelled"
        async with running_stack(settings) as stack:
            llm.config.fault = Fault("401")  # not worth another try: the job fails at once
            failing = await ask(stack, receiver.url)
            failed = await settled(stack, failing["job_id"])
            llm.config.fault = Fault("hang")
            running = await ask(stack, receiver.url)
            await reaches_stage(stack, running["job_id"], "generating")
            assert (await stack.client.cancel(running["job_id"]))["status"] == "cancelling"
            cancelled = await settled(stack, running["job_id"])
            was_queued = await settled(stack, queued["job_id"])
        llm.config.fault = None
    assert failed["status"] == "failed" and cancelled["status"] == "cancelled"
    assert all(v["webhook"]["state"] == "delivered" for v in (failed, cancelled, was_queued))
    told = {d.payload["data"]["job_id"]: d.payload for d in receiver.received}
    assert told[failing["job_id"]]["type"] == "job.failed"
    assert told[failing["job_id"]]["data"]["error"] == failed["error"]
    assert told[running["job_id"]]["type"] == "job.cancelled"
    assert told[queued["job_id"]]["type"] == "job.cancelled"
    assert told[queued["job_id"]]["data"]["status"] == "cancelled"
    assert len(receiver.received) == 3  # once per ended job


async def test_urls_are_refused_at_accept_time_with_400(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm, webhook_hosts=None)
    refused = {
        "http://127.0.0.1:9/hook": "loopback",
        "http://[::1]:9/hook": "loopback",
        "http://localhost/hook": "loopback",
        "http://169.254.169.254/latest/meta-data": "link-local",
        "http://10.0.0.7/hook": "private",
        "http://224.0.0.1/hook": "multicast",
        "ftp://example.com/hook": "http:// or https://",
        "http://user:pw@example.com/hook": "credentials",
        "http://exa mple.com/hook": "control characters",
        "http://bücher.example/hook": "xn--",
        "http://[::1/hook": "not a valid URL",
    }
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        for url, reason in refused.items():
            answer = await http.post("/chat", json={"query": "tea?", "webhook_url": url})
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["error"]["code"] == "webhook_refused"
            assert reason in answer.json()["error"]["message"], answer.text
            document = {"text": "tea", "webhook_url": url}
            assert (await http.post("/documents", json=document)).status_code == 400
        files = {"files": ("a.md", b"# A", "text/markdown")}
        form = {"webhook_url": "http://127.0.0.1/hook"}
        answer = await http.post("/documents", files=files, data=form)
        assert answer.status_code == 400 and "RAG_WEBHOOK_HOSTS" in answer.text
    no_secret = hook_settings(valkey, tmp_path, llm, webhook_secret=None)
    async with (
        running_stack(no_secret, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        body = {"query": "tea?", "webhook_url": "https://example.com/hook"}
        answer = await http.post("/chat", json=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "webhooks_off"


# Hosts that name a loopback or private address in a form other than a.b.c.d or a plain
# IPv6 one, and a word of the 400's message for each.
DISGUISED = {
    "0x7f000001": "0x7f000001 (that is 127.0.0.1): a loopback address",
    "2130706433": "2130706433 (that is 127.0.0.1): a loopback address",
    "127.1": "127.1 (that is 127.0.0.1): a loopback address",
    "0": "0 (that is 0.0.0.0)",
    "0xa.0x1": "0xa.0x1 (that is 10.0.0.1): a private address",
    "0177.0.0.1": "not a valid URL",  # octal: refused as it is parsed
    "[::127.0.0.1]": "a loopback address (127.0.0.1) inside an IPv4-compatible address",
    "[64:ff9b::a00:7]": "a private address (10.0.0.7) inside a NAT64 address",
    "[64:ff9b:1::808:808]": "a local NAT64 address",
    "[2002:7f00:1::1]": "a loopback address (127.0.0.1) inside a 6to4 address",
    "[2002:c0a8:101::1]": "a private address (192.168.1.1) inside a 6to4 address",
    "[::ffff:a9fe:a9fe]": "a link-local address (169.254.169.254) inside an IPv4-mapped",
}


async def test_disguised_addresses_are_refused_at_accept_time_with_400(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """IPv4 shorthands the resolver reads as an address, and IPv6 addresses that carry a
    private IPv4 one, are refused when the job is asked for, saying which address they are."""
    settings = hook_settings(valkey, tmp_path, llm, webhook_hosts=None)
    async with (
        running_stack(settings, with_worker=False) as stack,
        httpx.AsyncClient(base_url=stack.base_url) as http,
    ):
        for host, reason in DISGUISED.items():
            url = f"http://{host}:9/hook"
            answer = await http.post("/chat", json={"query": "tea?", "webhook_url": url})
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["error"]["code"] == "webhook_refused"
            assert reason in answer.json()["error"]["message"], answer.text
            document = {"text": "tea", "webhook_url": url}
            assert (await http.post("/documents", json=document)).status_code == 400


async def test_disguised_addresses_are_refused_at_delivery() -> None:
    """The delivery's own check (what the host resolves to, here by the real resolver)
    refuses them too, for a job accepted before they were refused at accept time."""
    policy = HostPolicy("*")
    for host in DISGUISED:
        bare = host.removeprefix("[").removesuffix("]")
        with pytest.raises(WebhookRefused, match="webhooks may not go to"):
            await policy.addresses(Target(f"http://{host}/", "http", bare, 80))


def loopback_name() -> str:
    """A name other than localhost that resolves to loopback here (the machine's own)."""
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses
    return name


async def test_a_name_resolving_to_loopback_is_refused_at_delivery(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm, webhook_hosts="*")
    async with receiving(host=loopback_name()) as receiver, running_stack(settings) as stack:
        accepted = await ask(stack, receiver.url)  # a name: accepted, checked when resolved
        view = await settled(stack, accepted["job_id"])
    assert receiver.received == [] and receiver.unverified == 0
    [attempt] = view["webhook"]["attempts"]
    assert view["webhook"]["state"] == "failed"
    assert attempt["status"] is None and "loopback" in attempt["error"]


async def test_a_redirect_is_not_followed(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> None:
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver, running_stack(settings) as stack:
        receiver.then = 307
        view = await settled(stack, (await ask(stack, receiver.url))["job_id"])
    assert [d.path for d in receiver.received] == ["/hook"]  # never /elsewhere
    [attempt] = view["webhook"]["attempts"]
    assert attempt["status"] == 307 and "not followed" in attempt["error"]
    assert view["webhook"]["state"] == "failed"


async def test_a_webhook_is_its_jobs_owners_alone(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """The URL is given when the job is created, by its creator: no route sets it on an
    existing job, and another key does not even see the job."""
    settings = keyed_settings(
        valkey,
        tmp_path,
        llm,
        users={"alice": f"{'alice':-<20}", "bob": f"{'bob':-<20}"},
        admins={},
        webhook_secret=SECRET,
        webhook_hosts="127.0.0.1",
    )
    async with receiving() as receiver, running_stack(settings, with_worker=False) as stack:
        alice = httpx.AsyncClient(base_url=stack.base_url, headers=bearer("alice"))
        bob = httpx.AsyncClient(base_url=stack.base_url, headers=bearer("bob"))
        async with alice, bob:
            body = {"query": "tea?", "webhook_url": receiver.url}
            job_id = (await alice.post("/chat", json=body)).json()["job_id"]
            assert (await alice.get(f"/jobs/{job_id}")).json()["webhook"]["url"] == receiver.url
            assert (await bob.get(f"/jobs/{job_id}")).status_code == 404
            other = {"webhook_url": "http://127.0.0.1:9/theirs"}
            for method in ("PATCH", "PUT", "POST"):
                answer = await bob.request(method, f"/jobs/{job_id}", json=other)
                assert answer.status_code in (404, 405), (method, answer.text)
            assert (await alice.get(f"/jobs/{job_id}")).json()["webhook"]["url"] == receiver.url


def bearer(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {name:-<20}"}


def test_the_host_policy() -> None:
    public_only = HostPolicy(None)
    assert public_only.check_url("https://hooks.example.com/x").port == 443
    for url in ("http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/"):
        with pytest.raises(WebhookRefused):
            public_only.check_url(url)
    listed = HostPolicy("*.internal, 10.1.2.3")
    assert listed.check_url("http://a.hooks.internal/x").host == "a.hooks.internal"
    assert listed.check_url("http://10.1.2.3/x").host == "10.1.2.3"
    with pytest.raises(WebhookRefused, match="not in RAG_WEBHOOK_HOSTS"):
        listed.check_url("https://example.com/x")  # no "*": only what is listed
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    # A shorthand or an IPv6 carrier of a public address is as public as that address.
    for host in ("1572395042", "[64:ff9b::5db8:d822]", "[2002:5db8:d822::1]"):
        assert public_only.check_url(f"http://{host}/x").port == 80
    assert not is_public(ipaddress.ip_address("::"))
    assert not is_public(ipaddress.ip_address("fe80::1"))
    assert not is_public(ipaddress.ip_address("fc00::1"))


async def test_a_requeued_job_calls_its_webhook_again_at_its_next_end(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm, job_max_tries=1)
    async with receiving() as receiver, running_stack(settings) as stack:
        llm.config.fault = Fault("500")  # worth another try, but there is none: dead letter
        accepted = await ask(stack, receiver.url)
        failed = await settled(stack, accepted["job_id"])
        llm.config.fault = None
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            requeued = await http.post(f"/dead-letters/{accepted['job_id']}/requeue")
            assert requeued.status_code == 202, requeued.text
        completed = await settled(stack, accepted["job_id"])
    assert failed["status"] == "failed" and completed["status"] == "complete"
    assert [d.payload["type"] for d in receiver.received] == ["job.failed", "job.completed"]
    first, second = (d.headers["webhook-id"] for d in receiver.received)
    assert first != second  # two ends, two messages


async def test_a_webhook_lost_with_its_worker_is_queued_when_the_job_runs_again(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """A worker that ended a job and died before queuing its webhook: arq runs the job again,
    the lifecycle finds it ended, and queues the webhook it lacks (once)."""
    settings = hook_settings(valkey, tmp_path, llm)
    async with receiving() as receiver:
        async with running_stack(settings, with_worker=False) as stack:
            accepted = await ask(stack, receiver.url)
            # The dead worker's last write: the job's end, and nothing after it.
            redis = Redis.from_url(settings.redis_url or "")
            ended = record_fields(status=JobStatus.COMPLETE, answer="Two minutes.", seq=3)
            await redis.hset(Keys(settings.key_prefix).job(accepted["job_id"]), mapping=ended)
            await redis.aclose()
        async with running_stack(settings) as stack:  # arq hands the job to a worker again
            view = await settled(stack, accepted["job_id"])
    assert view["webhook"]["state"] == "delivered"
    [delivery] = receiver.received
    assert delivery.payload["type"] == "job.completed"
    assert delivery.payload["data"]["answer"] == "Two minutes."


async def test_a_delivery_whose_worker_was_lost_after_the_receiver_answered_is_sent_again(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    """A worker killed after the receiver answered, before it recorded the answer: arq has
    counted the run, the record has not. As such a worker leaves it: the delivery pending,
    no try recorded, and arq's count of runs at the tries allowed. The next run sends the
    message again (the receiver dedupes by its id) instead of giving up."""
    settings = hook_settings(valkey, tmp_path, llm, webhook_max_tries=3)
    async with receiving() as receiver:
        async with running_stack(settings, with_worker=False) as stack:
            accepted = await ask(stack, receiver.url)
            await stack.client.cancel(accepted["job_id"])  # ended: its webhook is queued
            message_id = (await job(stack, accepted["job_id"]))["webhook"]["id"]
            async with Redis.from_url(settings.redis_url or "") as redis:
                await redis.set(Keys(settings.key_prefix).arq_tries(message_id), 3)
        async with running_stack(settings) as stack:
            view = await settled(stack, accepted["job_id"])
            async with httpx.AsyncClient(base_url=stack.base_url) as http:
                dead = (await http.get("/dead-letters")).json()
    assert view["webhook"]["state"] == "delivered"
    assert [a["status"] for a in view["webhook"]["attempts"]] == [204]
    [delivery] = receiver.received
    assert delivery.headers["webhook-id"] == message_id
    assert dead["webhooks"] == []


async def test_a_dead_lettered_webhook_requeued_is_delivered_once_the_receiver_is_up(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = hook_settings(valkey, tmp_path, llm, webhook_max_tries=2)
    async with receiving() as receiver, running_stack(settings) as stack:
        receiver.then = 503  # the receiver is down
        job_id = (await ask(stack, receiver.url))["job_id"]
        failed = await settled(stack, job_id)
        receiver.then = 204  # and back
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            requeued = await http.post(f"/dead-letters/webhooks/{job_id}/requeue")
            assert requeued.status_code == 202, requeued.text
            delivered = await settled(stack, job_id)
            dead = (await http.get("/dead-letters")).json()
            again = await http.post(f"/dead-letters/webhooks/{job_id}/requeue")
            not_a_job = await http.post("/dead-letters/webhooks/nope/requeue")
    assert failed["webhook"]["state"] == "failed"
    assert delivered["status"] == "complete" and delivered["webhook"]["state"] == "delivered"
    assert requeued.json()["webhook_id"] == failed["webhook"]["id"]
    assert dead["webhooks"] == [] and again.status_code == not_a_job.status_code == 404
    # The same message each try, and delivered once.
    assert [d.headers["webhook-id"] for d in receiver.received] == [failed["webhook"]["id"]] * 3
    assert [a["status"] for a in delivered["webhook"]["attempts"]] == [204]
