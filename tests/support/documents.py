"""A document sent as a JSON body (`POST /documents`), as the web page sends pasted text. The
Python client and the CLI upload files instead, so only tests send one from Python."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from rag_async.client.api import RagClient


async def add_document(
    client: RagClient,
    text: str,
    *,
    title: str | None = None,
    source: str | None = None,
    collection: str | None = None,
) -> dict[str, Any]:
    """The 202 body (job_id, document_id, ...) for `text`, sent to `client`'s API."""
    body: dict[str, Any] = {"text": text, "title": title, "source": source}
    if collection is not None:
        body["collection"] = collection
    async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as http:
        response = await http.post(
            "/documents", content=orjson.dumps(body), headers={"content-type": "application/json"}
        )
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted
