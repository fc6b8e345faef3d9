"""API keys and ownership: every route behind a key, nobody reads another's jobs, documents,
collections or idempotency keys, admins' routes for admins, and EventSource's signed token."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from redis.asyncio import Redis

from rag_async.api import create_app
from rag_async.config import Settings
from rag_async.domain.identity import EventsTokens, KeyRing
from rag_async.local.valkey import EmbeddedValkey
from rag_async.store.documents import DocumentRegistry
from rag_async.store.keys import Keys
from tests import conftest
from tests.conftest import (
    SAMPLE_DOCUMENT,
    Stack,
    cli_env,
    make_settings,
    run_cli,
    running_stack,
)

ALICE, BOB, OPS = "alice-secret-0123456789", "bob-secret-0123456789", "ops-secret-0123456789"
# Routes anyone may call: probes, the page, and FastAPI's own documentation.
OPEN = {"/healthz", "/readyz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def keyed_settings(valkey: EmbeddedValkey, tmp_path: Path, llm: Any, **more: Any) -> Settings:
    """Alice's and Bob's keys, and the admin Ops's."""
    users = {"alice": ALICE, "bob": BOB}
    return conftest.keyed_settings(valkey, tmp_path, llm, users=users, admins={"ops": OPS}, **more)


@pytest.fixture
async def keyed(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> AsyncIterator[Stack]:
    async with running_stack(keyed_settings(valkey, tmp_path, llm)) as stack:
        yield stack


def as_(stack: Stack, secret: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.AsyncClient(base_url=stack.base_url, headers=headers)


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        view: dict[str, Any] = (await http.get(f"/jobs/{job_id}")).json()
        if view["status"] in ("complete", "failed", "cancelled"):
            return view
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end")


async def test_every_route_but_the_open_ones_needs_a_key(keyed: Stack) -> None:
    paths = create_app(keyed.settings).openapi()["paths"]
    routes = [
        (method.upper(), path)
        for path, operations in paths.items()
        if path not in OPEN
        for method in operations
    ]
    assert len(routes) >= 12
    job_id = "0" * 32
    async with as_(keyed, None) as anonymous, as_(keyed, "not-a-key-0123456789") as wrong:
        for method, path in routes:
            url = re.sub(r"\{[a-z_]+\}", job_id, path)
            for http in (anonymous, wrong):
                response = await http.request(method, url, params={"job_id": job_id})
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"]["code"] == "unauthorized"
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/readyz")).status_code == 200


async def test_another_keys_job_is_not_found_like_an_unknown_one(keyed: Stack) -> None:
    async with as_(keyed, ALICE) as alice, as_(keyed, BOB) as bob, as_(keyed, OPS) as ops:
        job_id = (await alice.post("/chat", json={"query": "tea?"})).json()["job_id"]
        unknown = (await bob.get(f"/jobs/{'f' * 32}")).json()["error"]
        for response in (
            await bob.get(f"/jobs/{job_id}"),
            await bob.get("/job-status", params={"job_id": job_id}),
            await bob.delete(f"/jobs/{job_id}"),
            await bob.get(f"/jobs/{job_id}/events"),
        ):
            assert response.status_code == 404
            error = response.json()["error"]
            assert error["code"] == unknown["code"]
            assert error["message"] == unknown["message"].replace("f" * 32, job_id)
        assert (await finished(alice, job_id))["status"] == "complete"
        assert (await ops.get(f"/jobs/{job_id}")).status_code == 200  # an admin sees all


async def test_documents_and_collections_are_each_keys_own(keyed: Stack) -> None:
    async with as_(keyed, ALICE) as alice, as_(keyed, BOB) as bob, as_(keyed, OPS) as ops:
        document = {"text": SAMPLE_DOCUMENT, "title": "Tea", "collection": "notes"}
        added = (await alice.post("/documents", json=document)).json()
        await finished(alice, added["job_id"])
        document_id = added["document_id"]
        assert [d["document_id"] for d in (await alice.get("/documents")).json()["documents"]] == [
            document_id
        ]
        assert (await bob.get("/documents")).json()["documents"] == []
        assert (await bob.get(f"/documents/{document_id}")).status_code == 404
        assert (await bob.delete(f"/documents/{document_id}")).status_code == 404
        # Posting her id adds a document of his own, beside hers.
        elsewhere = {**document, "collection": "other", "document_id": document_id}
        his = await bob.post("/documents", json=elsewhere)
        assert his.status_code == 202
        assert his.json()["document_id"] == f"bob:{document_id}"
        assert (await alice.get(f"/documents/{document_id}")).json()["owner"] == "alice"
        listed = (await ops.get("/documents")).json()["documents"]
        assert sorted((d["owner"], d["collection"]) for d in listed) == [
            ("alice", "notes"),
            ("bob", "other"),
        ]
        # Bob's collection "notes" is not Alice's: his question finds nothing of hers.
        asked = {"query": "How long do I brew green tea?", "collection": "notes"}
        mine = (await alice.post("/chat", json=asked)).json()["job_id"]
        his = (await bob.post("/chat", json=asked)).json()["job_id"]
        assert (await finished(alice, mine))["sources"]
        assert (await finished(bob, his))["sources"] == []


async def test_another_keys_document_ids_are_no_oracle(keyed: Stack) -> None:
    """Bob can neither predict Alice's derived ids nor tell, by posting an id, whether she
    holds it: his post of her id is answered as one of an id nobody holds, lands in his own
    documents, and leaves hers (and her later posts of the id) alone."""
    async with as_(keyed, ALICE) as alice, as_(keyed, BOB) as bob:
        tea = {"text": SAMPLE_DOCUMENT, "source": "tea.md"}
        derived = (await alice.post("/documents", json=tea)).json()["document_id"]
        assert derived != hashlib.sha256(b"alice/default\x00tea.md").hexdigest()[:24]
        again = (await alice.post("/documents", json=tea)).json()["document_id"]
        assert again == derived  # the same source still replaces its document
        chosen = (await alice.post("/documents", json={**tea, "document_id": "plan"})).json()
        assert chosen["document_id"] == "alice:plan"
        answers = []
        for probe in ("plan", "alice:plan", derived, "nobody-has-this"):
            response = await bob.post("/documents", json={**tea, "document_id": probe})
            answers.append((response.status_code, response.json()["document_id"]))
        assert answers == [
            (202, "bob:plan"),
            (202, "bob:alice:plan"),
            (202, f"bob:{derived}"),
            (202, "bob:nobody-has-this"),
        ]
        # Alice's "plan" is hers still: by the id she was answered with, or the one she chose.
        for name in ("alice:plan", "plan"):
            shown = (await alice.get(f"/documents/{name}")).json()
            assert (shown["document_id"], shown["owner"]) == ("alice:plan", "alice")
        reposted = await alice.post("/documents", json={**tea, "document_id": "alice:plan"})
        assert reposted.json()["document_id"] == "alice:plan"
        assert (await bob.get("/documents/plan")).json()["document_id"] == "bob:plan"
        mine = {d["document_id"] for d in (await alice.get("/documents")).json()["documents"]}
        assert mine == {derived, "alice:plan"}


async def test_documents_stored_under_the_earlier_ids_are_still_found(keyed: Stack) -> None:
    """A document stored before ids were keyed (a SHA-256 of its source, a bare chosen id)
    keeps its id: its owner's upload of the same source or id replaces it; another key's
    post of that id makes a document of its own."""
    earlier = hashlib.sha256(b"alice/default\x00tea.md").hexdigest()[:24]
    redis = Redis.from_url(keyed.settings.redis_url or "")
    registry = DocumentRegistry(redis, Keys(keyed.settings.key_prefix))
    for document_id, source in ((earlier, "tea.md"), ("plan", "")):
        fields = {"owner": "alice", "collection": "alice/default", "source": source}
        await registry.accept(document_id, "0" * 32, {**fields, "status": "indexed"}, size=1)
    await redis.aclose()
    async with as_(keyed, ALICE) as alice, as_(keyed, BOB) as bob:
        tea = {"text": SAMPLE_DOCUMENT, "source": "tea.md"}
        replaced = (await alice.post("/documents", json=tea)).json()
        assert replaced["document_id"] == earlier
        chosen = await alice.post("/documents", json={**tea, "document_id": "plan"})
        assert chosen.json()["document_id"] == "plan"
        assert (await finished(alice, replaced["job_id"]))["status"] == "complete"
        his = await bob.post("/documents", json={**tea, "document_id": earlier})
        assert his.json()["document_id"] == f"bob:{earlier}"
        assert (await bob.get(f"/documents/{earlier}")).json()["document_id"] == f"bob:{earlier}"
        mine = {d["document_id"] for d in (await alice.get("/documents")).json()["documents"]}
        assert mine == {earlier, "plan"}


async def test_idempotency_keys_are_each_keys_own(keyed: Stack) -> None:
    async with as_(keyed, ALICE) as alice, as_(keyed, BOB) as bob:
        headers = {"Idempotency-Key": "same-key"}
        first = (await alice.post("/chat", json={"query": "tea?"}, headers=headers)).json()
        again = (await alice.post("/chat", json={"query": "tea?"}, headers=headers)).json()
        others = (await bob.post("/chat", json={"query": "tea?"}, headers=headers)).json()
    assert first["job_id"] == again["job_id"] != others["job_id"]


async def test_admin_routes_are_for_admin_keys(keyed: Stack) -> None:
    async with as_(keyed, BOB) as bob, as_(keyed, OPS) as ops:
        refused = await bob.get("/dead-letters")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        assert (await bob.post(f"/dead-letters/{'0' * 32}/requeue")).status_code == 403
        webhook = f"/dead-letters/webhooks/{'0' * 32}"
        assert (await bob.post(f"{webhook}/requeue")).status_code == 403
        assert (await bob.delete(webhook)).status_code == 403
        assert (await ops.get("/dead-letters")).status_code == 200
        counts, details = (await bob.get("/stats")).json(), (await ops.get("/stats")).json()
    assert "workers" not in counts and "recent_failures" not in counts
    assert counts["workers_alive"] == len(details["workers"]) == 1


async def test_eventsource_follows_with_the_signed_token_of_its_events_url(keyed: Stack) -> None:
    async with as_(keyed, ALICE) as alice, as_(keyed, None) as anonymous:
        accepted = (await alice.post("/chat", json={"query": "tea?"})).json()
        other = (await alice.post("/chat", json={"query": "coffee?"})).json()
        url = accepted["events_url"]
        assert "token=" in url and ALICE not in url
        async with aconnect_sse(anonymous, "GET", url) as source:
            types = [sse.event async for sse in source.aiter_sse() if sse.event]
        assert types[-1] == "done"
        # The token is the job's own, signed, and not forever.
        token = url.partition("token=")[2]
        settings = keyed.settings
        keyring = KeyRing.from_settings(settings)
        expired = EventsTokens(keyring.token_secret(settings), ttl=-1)
        job_id = accepted["job_id"]
        for bad in (
            f"/jobs/{other['job_id']}/events?token={token}",  # another job
            f"/jobs/{job_id}/events?token={token[:-2]}xx",  # forged
            f"/jobs/{job_id}/events?token={expired.issue(job_id, 'alice')}",
            f"/jobs/{job_id}/events?token={expired.issue(job_id, 'bob')}",
            f"/jobs/{job_id}/events",  # none
        ):
            response = await anonymous.get(bad)
            assert response.status_code == 401, (bad, response.text)
        # Polling hands out a fresh one.
        fresh = (await alice.get(f"/jobs/{job_id}")).json()["events_url"]
        replayed = await anonymous.get(fresh)
        assert replayed.status_code == 200 and "event: done" in replayed.text


def test_without_keys_the_api_will_not_listen_beyond_loopback(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(valkey, tmp_path)
    refused = run_cli("api", env=cli_env(settings, RAG_HOST="0.0.0.0"))
    assert refused.returncode == 2
    assert "RAG_API_KEYS" in refused.stderr and "RAG_ALLOW_ANONYMOUS" in refused.stderr
    assert "Traceback" not in refused.stderr
    malformed = run_cli("api", env=cli_env(settings, RAG_API_KEYS="alice:short"))
    assert malformed.returncode == 2 and "RAG_API_KEYS: each key is name=secret" in malformed.stderr
    assert "short" not in malformed.stderr  # a secret is never echoed


async def test_the_cli_sends_rag_api_key(valkey: EmbeddedValkey, tmp_path: Path, llm: Any) -> None:
    settings = keyed_settings(valkey, tmp_path, llm)
    async with running_stack(settings) as stack:
        env = cli_env(settings, RAG_API_URL=stack.base_url)
        without = await asyncio.to_thread(run_cli, "ask", "tea?", env=env)
        keyed = await asyncio.to_thread(run_cli, "ask", "tea?", env={**env, "RAG_API_KEY": ALICE})
    assert without.returncode != 0 and "API key" in without.stderr, without.stderr
    assert keyed.returncode == 0, keyed.stderr
