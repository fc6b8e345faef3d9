"""Metadata end to end: documents uploaded with `attributes` (a JSON body and a multipart
form), shown by the registry and carried into their chunks; a question asked with `filters`
cites only the matching document; a re-upload replaces the attributes; and bad filters or
attributes are a clear 422 that leaves nothing behind. The real app, a real worker, Valkey and
embedded Qdrant."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rag_async.config import Settings
from tests.conftest import Stack, running_api
from tests.test_bad_input import assert_error, assert_nothing_written
from tests.test_cli import cli, no_traceback

TEA = """# Tea notes

Green tea is brewed at 80 degrees Celsius for two minutes, black tea with boiling water.
"""
MORE_TEA = """# More tea notes

Oolong tea is brewed at 90 degrees Celsius for three minutes, white tea a little cooler.
"""


def _tea(attributes: dict[str, Any] | None) -> dict[str, Any]:
    """Blue's JSON body, with these attributes (or none)."""
    body: dict[str, Any] = {"text": TEA, "title": "Tea notes", "source": "blue.md"}
    return body if attributes is None else body | {"attributes": attributes}


async def _post_json(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        response = await http.post("/documents", content=orjson.dumps(body), headers=JSON)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def _ended(stack: Stack, job_id: str) -> list[Any]:
    events = [event async for event in stack.client.follow(job_id)]
    assert events[-1].type == "done", events[-1]
    return events


async def _cited(stack: Stack, filters: dict[str, Any] | None) -> tuple[set[str], dict[str, Any]]:
    """The titles of the sources a question about tea is answered from, and its job view."""
    accepted = await stack.client.ask("How is tea brewed?", filters=filters)
    await _ended(stack, accepted["job_id"])
    job = await stack.client.job(accepted["job_id"])
    return {source["title"] for source in job["sources"]}, job


async def _add_two(stack: Stack) -> tuple[str, str]:
    """Blue (a JSON body) and red (a multipart upload), each with its attributes."""
    blue = await _post_json(
        stack,
        {
            "text": TEA,
            "title": "Tea notes",
            "source": "blue.md",
            "attributes": {"team": "blue", "year": 2023},
        },
    )
    red = await stack.client.upload(
        [("red.md", MORE_TEA.encode())], attributes={"team": "red", "year": 2020, "draft": True}
    )
    for job_id in (blue["job_id"], red["job_id"]):
        await _ended(stack, job_id)
    return blue["document_id"], red["document_id"]


async def test_a_question_with_filters_cites_only_the_matching_document(stack: Stack) -> None:
    blue, red = await _add_two(stack)
    shown = {d["document_id"]: d["attributes"] for d in await stack.client.documents()}
    assert shown == {
        blue: {"team": "blue", "year": 2023},
        red: {"team": "red", "year": 2020, "draft": True},
    }
    assert (await stack.client.document(red))["attributes"]["draft"] is True

    everything, _ = await _cited(stack, None)
    assert everything == {"Tea notes", "More tea notes"}
    only_red = {"type": "eq", "key": "team", "value": "red"}
    cited, job = await _cited(stack, only_red)
    assert cited == {"More tea notes"}
    assert job["filters"] == only_red  # kept in the job's record
    recent = {"type": "gte", "key": "year", "value": 2021}
    assert (await _cited(stack, recent))[0] == {"Tea notes"}
    either = {"type": "or", "filters": [{"type": "eq", "key": "draft", "value": True}, recent]}
    assert (await _cited(stack, either))[0] == {"Tea notes", "More tea notes"}
    assert (await _cited(stack, {"type": "eq", "key": "team", "value": "green"}))[0] == set()
    # POST /search keeps to the same filters, and its job records them.
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        body = {"query": "How is tea brewed?", "filters": only_red}
        found = (await http.post("/search", json=body)).json()
        assert {r["title"] for r in found["results"]} == {"More tea notes"}
        assert (await stack.client.job(found["job_id"]))["filters"] == only_red
        bad = {"query": "tea?", "filters": {"type": "gt", "key": "team", "value": "red"}}
        assert_error(await http.post("/search", json=bad), 422, "invalid_request", "ISO 8601")


async def test_a_reupload_replaces_the_attributes(stack: Stack) -> None:
    blue, _ = await _add_two(stack)
    same = await _post_json(stack, _tea({"year": 2023, "team": "blue"}))  # in another order
    events = await _ended(stack, same["job_id"])
    assert "unchanged" in [e.data.get("stage") for e in events if e.type == "progress"]
    again = await _post_json(
        stack,
        {"text": TEA, "title": "Tea notes", "source": "blue.md", "attributes": {"team": "green"}},
    )
    assert again["document_id"] == blue
    events = await _ended(stack, again["job_id"])
    assert "unchanged" not in [e.data.get("stage") for e in events if e.type == "progress"]
    assert (await stack.client.document(blue))["attributes"] == {"team": "green"}
    assert (await _cited(stack, {"type": "eq", "key": "team", "value": "blue"}))[0] == set()
    green = {"type": "eq", "key": "team", "value": "green"}
    assert (await _cited(stack, green))[0] == {"Tea notes"}
    # Without attributes, the next version has none.
    await _ended(
        stack,
        (await _post_json(stack, {"text": TEA, "title": "Tea notes", "source": "blue.md"}))[
            "job_id"
        ],
    )
    assert (await stack.client.document(blue))["attributes"] == {}
    assert (await _cited(stack, green))[0] == set()


async def test_the_cli_ingests_with_attributes_and_asks_with_filters(
    stack: Stack, tmp_path: Path
) -> None:
    (tmp_path / "blue.md").write_text(TEA)
    (tmp_path / "red.md").write_text(MORE_TEA)
    for name, year in (("blue", "2023"), ("red", "2020")):
        ingested = await cli(
            stack, "ingest", str(tmp_path / f"{name}.md"), "--attribute", f"team={name}",
            "--attribute", f"year={year}",
        )  # fmt: skip
        assert ingested.returncode == 0, ingested.stderr
    red = next(d for d in await stack.client.documents() if d["source"] == "red.md")
    assert red["attributes"] == {"team": "red", "year": 2020}
    shown = await cli(stack, "documents", "show", red["document_id"])
    assert "team=red, year=2020" in shown.stdout

    asked = await cli(stack, "ask", "--json", "--filter", "team=red", "How is tea brewed?")
    assert asked.returncode == 0, asked.stderr
    assert {s["title"] for s in json.loads(asked.stdout)["sources"]} == {"More tea notes"}
    recent = '{"type": "gt", "key": "year", "value": 2021}'
    asked = await cli(stack, "ask", "--json", "--filter", recent, "How is tea brewed?")
    assert {s["title"] for s in json.loads(asked.stdout)["sources"]} == {"Tea notes"}
    both = await cli(
        stack, "ask", "--json", "--filter", "team=red", "--filter", "year=2023", "tea?"
    )
    assert json.loads(both.stdout)["sources"] == []

    bad = await cli(stack, "ask", "--filter", "team", "tea?")
    assert bad.returncode == 2 and "--filter: 'team' is not key=value" in bad.stderr
    refused = await cli(stack, "ask", "--filter", "a.b=1", "tea?")
    assert refused.returncode == 1 and "letters, digits" in refused.stderr
    no_traceback(bad), no_traceback(refused)


# --- bad input ----------------------------------------------------------------------------

JSON = {"content-type": "application/json"}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, no worker: whatever is accepted stays in the queue."""
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


def _deep(levels: int) -> dict[str, Any]:
    where: dict[str, Any] = {"type": "eq", "key": "a", "value": 1}
    for _ in range(levels):
        where = {"type": "and", "filters": [where]}
    return where


def _deep_json(levels: int) -> bytes:
    """Deeper than a JSON encoder goes: written out."""
    return (
        b'{"type": "and", "filters": [' * levels
        + b'{"type": "eq", "key": "a", "value": 1}'
        + b"]}" * levels
    )


BAD_FILTERS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("unknown type", {"type": "like", "key": "a", "value": 1}, ("filters", "expected tags")),
    ("no key", {"type": "eq", "value": 1}, ("filters.eq.key", "required")),
    ("dotted key", {"type": "eq", "key": "a.b", "value": 1}, ("filters.eq.key", "letters")),
    ("gt on words", {"type": "gt", "key": "a", "value": "soon"}, ("ISO 8601", "'soon'")),
    ("a list for eq", {"type": "eq", "key": "a", "value": [1]}, ("single value",)),
    ("in without a list", {"type": "in", "key": "a", "value": 1}, ("takes a list",)),
    ("too deep", _deep(6), ("5 levels",)),
    ("two hundred levels", _deep_json(200), ("5 levels",)),
    ("a thousand levels", _deep_json(1000), ("cannot be read",)),  # as any JSON that deep
    (
        "too many",
        {"type": "or", "filters": [{"type": "eq", "key": "a", "value": n} for n in range(65)]},
        ("64 comparisons",),
    ),
    ("a string", "team=red", ("filters",)),
]


@pytest.mark.parametrize(
    ("case", "filters", "needles"), BAD_FILTERS, ids=[c[0] for c in BAD_FILTERS]
)
async def test_bad_filters_are_a_clear_422_and_enqueue_nothing(
    api: httpx.AsyncClient, settings: Settings, case: str, filters: Any, needles: tuple[str, ...]
) -> None:
    raw = filters if isinstance(filters, bytes) else orjson.dumps(filters)
    body = b'{"query": "tea?", "filters": ' + raw + b"}"
    response = await api.post("/chat", content=body, headers=JSON)
    error = assert_error(response, 422, "invalid_request", *needles)
    assert "Value error" not in error["message"]
    await assert_nothing_written(settings)


async def test_bad_attributes_are_a_clear_422_and_store_nothing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    many = {f"k{n}": n for n in range(17)}
    body = orjson.dumps({"text": "Tea.", "attributes": many})
    response = await api.post("/documents", content=body, headers=JSON)
    assert_error(response, 422, "invalid_request", "attributes", "16 attributes at most")
    for form, needles in [
        ("{not json", ("not a JSON object",)),
        ('{"a b": 1}', ("attributes", "letters, digits")),
        ('{"k": {"nested": 1}}', ("attributes.k", "a string, a number or a boolean")),
        ('["a"]', ("attributes", "dictionary")),
    ]:
        files = {"files": ("tea.md", b"# Tea\n\nGreen tea.")}
        response = await api.post("/documents", files=files, data={"attributes": form})
        assert_error(response, 422, "invalid_attributes", *needles)
    await assert_nothing_written(settings)
