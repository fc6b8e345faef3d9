"""POST /search: retrieval alone, as a job on the workers, waited for by the request; against
the real app, worker, Valkey and embedded Qdrant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import Stack, ingest, make_settings, running_stack, running_worker
from tests.test_auth import ALICE, BOB, as_, finished, keyed_settings

KETTLE = """# Kettle

The zorblaxian kettle hums when it is fed quince juice. Descale it every four weeks with
citric acid dissolved in warm water.
"""


async def test_search_answers_the_ranked_passages_without_an_llm(stack: Stack, llm: Any) -> None:
    await ingest(stack)  # Tea
    await ingest(stack, KETTLE, title="Kettle")
    chats = llm.stats.chat_requests
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post("/search", json={"query": "How long does green tea brew?"})
        assert response.status_code == 200, response.text
        body = response.json()
        results = body["results"]
        assert [r["n"] for r in results] == [1, 2]  # Tea's two chunks; Kettle says no word
        assert results[0]["title"] == "Tea" and "80 degrees" in results[0]["text"]
        assert results[0]["heading"] == "Tea › Brewing" and results[0]["source"] == "Tea.md"
        assert results[0]["score"] > results[1]["score"] > 0
        assert results[0]["collection"] == "default" and results[0]["page"] is None

        view = (await http.get(f"/jobs/{body['job_id']}")).json()
        assert view["kind"] == "search" and view["status"] == "complete"
        assert view["sources"] == results and view["query"] == "How long does green tea brew?"
        assert view["answer"] == f"found {len(results)} sources"
        assert "retrieval" in view["timings"] and set(view["providers"]) == {"retrieval"}
        assert view["priority"] == "interactive"

        both = (await http.post("/search", json={"query": "green tea kettle"})).json()
        assert {r["title"] for r in both["results"]} == {"Tea", "Kettle"}
        one = (await http.post("/search", json={"query": "tea kettle", "top_k": 1})).json()
        assert len(one["results"]) == 1
        # Above the best score nothing is left; between the first two, the first alone.
        top, second = results[0]["score"], results[1]["score"]
        for threshold, count in ((top + 1, 0), ((top + second) / 2, 1)):
            asked = {"query": "How long does green tea brew?", "score_threshold": threshold}
            kept = (await http.post("/search", json=asked)).json()["results"]
            assert len(kept) == count and [r["n"] for r in kept] == list(range(1, count + 1))
        elsewhere = {"query": "green tea", "collection": "other"}
        assert (await http.post("/search", json=elsewhere)).json()["results"] == []
    assert llm.stats.chat_requests == chats, "a search never calls the LLM"


BAD_BODIES: list[Any] = [
    {},
    {"query": ""},
    {"query": "   "},
    {"query": "x" * 5000},
    {"query": "\ud800 lone"},
    {"query": "tea", "top_k": 0},
    {"query": "tea", "top_k": 51},
    {"query": "tea", "top_k": "many"},
    {"query": "tea", "collection": "*"},
    {"query": "tea", "collection": "a/b"},
    {"query": "tea", "score_threshold": "inf"},
    {"query": "tea", "score_threshold": False},
    {"query": "tea", "top_k": "5"},
    {"query": "tea", "filter": {"a": 1}},
    ["tea"],
]


async def test_bad_searches_are_refused_with_a_422_that_says_why(stack: Stack) -> None:
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        for body in [*(json.dumps(body).encode() for body in BAD_BODIES), b"{not json"]:
            response = await http.post("/search", content=body, headers=headers)
            assert response.status_code == 422, (body[:80], response.text)
            assert response.json()["error"]["message"], response.text


async def test_a_search_still_queued_answers_202_and_its_results_follow(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(valkey, tmp_path, llm_base_url=llm.base_url, search_wait=0.3)
    async with running_stack(settings, with_worker=False) as stack:
        async with running_worker(settings):
            await ingest(stack)
        # No worker now: the searches wait in the queue beyond the API's wait.
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            response = await http.post("/search", json={"query": "green tea"})
            assert response.status_code == 202, response.text
            accepted = response.json()
            assert accepted["status_url"] == f"/job-status?job_id={accepted['job_id']}"
            # The Python client (what `rag-async eval` uses) gets the same 202, and waits.
            later = await stack.client.search("green tea", top_k=1)
            assert set(later) >= {"job_id", "status_url"} and "results" not in later
            async with running_worker(settings):
                view = await finished(http, accepted["job_id"])
                found = await stack.client.searched(later["job_id"])
        assert view["status"] == "complete" and view["kind"] == "search"
        assert view["sources"][0]["title"] == "Tea" and [s["title"] for s in found] == ["Tea"]


async def test_a_key_searches_its_own_collections_only(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    async with running_stack(keyed_settings(valkey, tmp_path, llm)) as stack:
        async with as_(stack, ALICE) as alice, as_(stack, BOB) as bob:
            added = await alice.post("/documents", json={"text": KETTLE, "title": "Kettle"})
            assert added.status_code == 202, added.text
            assert (await finished(alice, added.json()["job_id"]))["status"] == "complete"
            query = {"query": "zorblaxian kettle quince", "collection": "default"}

            mine = await alice.post("/search", json=query)
            assert mine.status_code == 200, mine.text
            assert [r["title"] for r in mine.json()["results"]] == ["Kettle"]
            theirs = await bob.post("/search", json=query)
            assert theirs.status_code == 200 and theirs.json()["results"] == []
            # Nor can another key read my search, or anyone search without a key.
            job_id = mine.json()["job_id"]
            assert (await bob.get(f"/jobs/{job_id}")).status_code == 404
            assert (await alice.get(f"/jobs/{job_id}")).status_code == 200
        async with as_(stack, None) as nobody:
            assert (await nobody.post("/search", json=query)).status_code == 401


async def test_a_hybrid_search_embeds_the_query_once_and_times_it(
    valkey: EmbeddedValkey, tmp_path: Path, llm: Any
) -> None:
    settings = make_settings(
        valkey, tmp_path, llm_base_url=llm.base_url, llm_api_key="k", embed_model="test-embed"
    )
    async with running_stack(settings) as stack:
        await ingest(stack)
        embedded, chats = llm.stats.embedding_requests, llm.stats.chat_requests
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            body = (await http.post("/search", json={"query": "How long does tea brew?"})).json()
            assert body["results"][0]["title"] == "Tea"
            view = (await http.get(f"/jobs/{body['job_id']}")).json()
        assert llm.stats.embedding_requests == embedded + 1 and llm.stats.chat_requests == chats
        assert {"embedding", "retrieval"} <= set(view["timings"])
        assert view["providers"]["retrieval"].startswith("hybrid")
