"""Property-based fuzzing of every operation of the API's own OpenAPI document (/openapi.json)
with schemathesis, against the real app (in process, over ASGI) and a real Valkey: once with
no API keys configured, once with a key configured and sent.

Whatever the request, no answer is a 5xx, every 4xx/5xx is the one JSON error shape, and each
answer keeps to the status codes, content types and schemas the document gives.

Schemathesis generates the requests and checks the answers; Hypothesis drives it here rather
than schemathesis' pytest integration (`schemathesis.pytest.from_fixture`), which fails on
pytest 9.2 (it reads and sets `Function._nodeid`, which pytest 9.2 no longer has). Each
operation gets schemathesis' deterministic edge cases (its "coverage" phase: boundary values,
wrong content types, methods the path does not take), then EXAMPLES schema-valid and EXAMPLES
schema-invalid requests, derandomized so that CI sees the same requests every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, CheckContext, CheckFunction, GenerationMode, Response
from schemathesis.errors import FailureGroup
from schemathesis.python import asgi
from schemathesis.schemas import BaseSchema

from rag_async.api import create_app
from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import make_settings, running_api

ALICE = "alice-secret-0123456789"
HOST = "localhost"  # the API refuses a Host it does not answer to (api/browser.py)
EXAMPLES = 30  # per operation, and per generation mode (schema-valid, schema-invalid)


def one_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx is JSON: `{"error": {"code": str, "message": str, ...}}`."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.partition(";")[0] == "application/json", (
        f"{response.status_code} sent as {content_type!r}: {response.content[:200]!r}"
    )
    body: Any = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), body
    return None


# Left out, and why:
# - positive_data_acceptance: the schema cannot say everything the API refuses, and rightly
#   so: a blank query, a multipart form with no file or too many, a document over the size
#   limit are schema-valid and answered 422/413 (documented, one shape, checked above).
# - allow_header_conformance: a 405's Allow lists the methods of the first route that matches
#   the path (Starlette's router), e.g. `OPTIONS /jobs/{id}` answers `Allow: GET` though the
#   path also takes DELETE.
# - use_after_free, ensure_resource_availability, object_level_authorization: they follow
#   links between operations or compare two users, which stateless runs with one key lack.
CHECKS: list[CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    one_error_shape,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.missing_required_header,
    schemathesis.checks.unsupported_method,
]
# Only where keys are configured: without them every caller is the local user, although the
# document declares the bearer scheme either way.
KEYED_CHECKS: list[CheckFunction] = [*CHECKS, schemathesis.checks.ignored_auth]

CONFIG = {
    "base-url": f"http://{HOST}",
    # A stream of events is cut after a few events or this long (no job here ever streams:
    # the fuzzer cannot guess the ids of the jobs it queued, and no worker runs them).
    "request-timeout": 2,
    "max-stream-events": 4,
    # The key, when there is one, is sent with every request (ignored_auth then tries the
    # request without it); the fuzzer does not make up keys of its own.
    "generation": {"with-security-parameters": False},
}

EXAMPLE_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=5000,  # ms per request; a request that hangs is a bug, not a slow machine
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class FuzzedApi:
    """One app's OpenAPI document, and how each of its requests is sent and checked."""

    schema: BaseSchema
    headers: dict[str, str]
    checks: list[CheckFunction]

    def call(self, case: Case) -> None:
        _streamed_if_waiting(case)
        case.call_and_validate(headers=self.headers, checks=self.checks)


# The OpenAI routes that, unless streamed (or in the background), wait for the answer: no
# worker runs here, so such a request would wait out the timeout. It is streamed instead, and
# the stream cut like any other; a `stream` the schema refuses is left as it was.
_WAITING = {"/v1/responses", "/v1/chat/completions"}


def _streamed_if_waiting(case: Case) -> None:
    body = case.body
    if not (case.method == "POST" and case.path in _WAITING and isinstance(body, dict)):
        return
    if body.get("stream", False) is False and body.get("background") is not True:
        body["stream"] = True


@pytest.fixture(params=[False, True], ids=["no-keys", "keys"])
def api(
    request: pytest.FixtureRequest, valkey: EmbeddedValkey, tmp_path: Path
) -> Iterator[FuzzedApi]:
    keyed: bool = request.param
    app_settings = make_settings(
        valkey,
        tmp_path,
        api_keys=f"alice={ALICE}" if keyed else None,
        # Hundreds of requests in seconds: the default bucket would answer most of them with
        # 429 before they reach a route (tests/test_quotas.py tests the limit).
        rate_limit_per_minute=1_000_000,
        # No worker runs: POST /search answers 202 once this wait for its job is up.
        search_wait=0.05,
    )
    app = create_app(app_settings)
    try:
        # Starts the app's lifespan, which stays up for the requests (schemathesis' own
        # event loop thread) until shut down below.
        schema = schemathesis.openapi.from_asgi(
            "/openapi.json",
            app,
            config=schemathesis.Config.from_dict(CONFIG),
            headers={"Host": HOST},
        )
        yield FuzzedApi(
            schema,
            headers={"Authorization": f"Bearer {ALICE}"} if keyed else {},
            checks=KEYED_CHECKS if keyed else CHECKS,
        )
    finally:
        asgi.shutdown_lifespans()


def fuzz(api: FuzzedApi, operation: APIOperation) -> None:
    edge_cases = api.schema.iter_coverage_cases(
        operation,
        generation_modes=list(GenerationMode),
        generation_config=api.schema.config.generation_for(operation=operation, phase="coverage"),
    )
    for case in edge_cases:
        api.call(case)
    for mode in GenerationMode:

        @EXAMPLE_SETTINGS
        @given(case=operation.as_strategy(mode))
        def send(case: Case) -> None:
            api.call(case)

        try:
            send()
        except Unsatisfiable:
            # Nothing to make schema-invalid: no parameters or body, or only path parameters
            # that are any string.
            if mode is GenerationMode.POSITIVE:
                raise


# Wall clock, on a machine that may be busy: over forty operations, each fuzzed in turn.
@pytest.mark.timeout(300)
def test_every_operation_answers_as_documented(api: FuzzedApi) -> None:
    operations = [result.ok() for result in api.schema.get_all_operations()]
    assert len(operations) >= 15, [operation.label for operation in operations]
    failures: dict[str, Exception | FailureGroup] = {}
    for operation in operations:  # all of them, whichever fail
        try:
            fuzz(api, operation)
        except (Exception, FailureGroup) as error:  # a FailureGroup: what the checks found
            failures[operation.label] = error
    if failures:
        # One message for them all: schemathesis' pytest plugin would fold a group of
        # FailureGroups into one per distinct status code.
        report = "\n\n".join(f"{label}: {error}" for label, error in failures.items())
        raise AssertionError(
            f"{len(failures)} of {len(operations)} operations failed:\n\n{report}"
        ) from next(iter(failures.values()))


async def test_json_nested_deeper_than_python_reads_is_refused(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """Found beside the fuzzing (schemathesis does not nest this deep): `[[[...]]]` a
    thousand deep was a 500 on POST /documents, as api/bodies.py read it again with Python's
    json, which raised RecursionError."""
    nested = b"[" * 5000 + b"]" * 5000
    async with (
        running_api(make_settings(valkey, tmp_path)) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=10) as http,
    ):
        for body in (nested, b'{"text": "tea", "title": ' + nested + b"}"):
            response = await http.post(
                "/documents", content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_request"
