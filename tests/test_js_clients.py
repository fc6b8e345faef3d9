"""Real JavaScript clients against /v1: the official `openai` SDK for Node and the Vercel AI
SDK (`ai` + `@ai-sdk/openai`), run by Node (tests/js_clients/clients.mjs) against the real app,
worker, Valkey and the test LLM. `make test` installs them from tests/js_clients' lock file."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, ingest

CLIENTS = Path(__file__).parent / "js_clients"
QUESTION = "How long do I brew green tea?"
FOLLOW_UP = "And black tea?"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (CLIENTS / "node_modules").is_dir(),
    reason="Node.js and `npm ci` in tests/js_clients (make test runs it)",
)


async def run_clients(stack: Stack) -> dict[str, Any]:
    node = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENTS / "clients.mjs"),
        f"{stack.base_url}/v1",
        "unused",
        QUESTION,
        FOLLOW_UP,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), timeout=120)
    assert node.returncode == 0, err.decode()
    results: dict[str, Any] = json.loads(out)
    return results


async def test_node_sdk_and_vercel_ai_sdk_stream_cite_count_and_follow_up(stack: Stack) -> None:
    await ingest(stack)
    results = await run_clients(stack)

    responses = results["node_sdk_responses"]
    assert responses["ok"], responses
    assert "[1]" in responses["text"]
    assert responses["annotations"] >= 1, responses  # citations reach a streaming client
    assert (responses["usage"] or {}).get("output_tokens", 0) > 0, responses
    assert responses["followUp"]["status"] == "completed" and responses["followUp"]["text"]

    chat = results["node_sdk_chat"]
    assert chat["ok"], chat
    assert chat["text"] and (chat["usage"] or {}).get("completion_tokens", 0) > 0, chat

    # Turn two sends the first answer back as an `item_reference`; it must be answered.
    vercel = results["vercel_multi_turn"]
    assert vercel["ok"], vercel
    assert vercel["text"] and vercel["sources"] >= 1, vercel
    assert vercel["followUp"]["text"]
