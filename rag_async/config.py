"""The one Settings class. This is the only module that reads the environment.

Entry points (the CLI, arq's CLI) build theirs with `load_settings()`, which names the bad
variable in an error and warns of a `RAG_*` variable no setting reads; tests pass their own.
Nothing here is instantiated at import time.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from rag_async.domain.errors import ConfigurationError
from rag_async.redaction import redact

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_URLS = (
    "redis_url",
    "qdrant_url",
    "api_url",
    "llm_base_url",
    "embed_base_url",
    "otel_exporter_endpoint",
)


class Settings(BaseSettings):
    """Every knob of rag-async, read from `RAG_*` environment variables (or a `.env` file)."""

    # An empty variable means "not set": compose files and manifests pass optional ones through
    # as `${VAR:-}`, and an empty RAG_LLM_API_KEY must not hide OPENAI_API_KEY.
    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # Where things live. With no URL set, `rag-async up` runs an embedded Valkey and an
    # embedded Qdrant inside `data_dir`.
    data_dir: Path = Path(".rag-async")
    redis_url: str | None = None
    qdrant_url: str | None = None
    # Without RAG_QDRANT_URL, the embedded store in `data_dir`: Qdrant Edge (Qdrant's engine
    # in-process), or qdrant-client's local mode (scores in Python, far slower) where Edge has
    # no build for the machine.
    store: Literal["edge", "local"] = "edge"
    qdrant_api_key: SecretStr | None = None
    # The embedded Valkey's memory limit (Valkey's units: 512mb, 2gb). Beyond it writes fail,
    # and the API says so, rather than Valkey evicting jobs; the machine's OOM killer would
    # take the whole server.
    valkey_maxmemory: str = Field(default="512mb", pattern=r"(?i)^[0-9]+([kmg]b?|b)?$")
    # The share of Valkey's maxmemory (the embedded one's, or a server's) kept for the writes
    # that running jobs need to end: new work is refused (507) once used memory passes the
    # rest. A Valkey without maxmemory has no such line. It must also hold one upload on its
    # way (max_document_bytes) per API process: Valkey takes a command's bytes in before
    # refusing them.
    valkey_memory_reserve: float = Field(default=0.2, ge=0, lt=1)
    # Seconds for one call to a Qdrant server: searches take milliseconds, an upsert batch of a
    # big document a few seconds on a loaded server. A failure is retried by the job.
    qdrant_timeout: float = Field(default=30.0, gt=0)
    key_prefix: str = "rag:"
    collection: str = "rag_chunks"  # the Qdrant collection holding every chunk
    # The document collection (a payload field, not a Qdrant collection) that documents and
    # questions use when they name none. Retrieval never crosses collections.
    default_collection: str = Field(default="default", pattern=r"^[A-Za-z0-9._-]{1,64}$")

    # The HTTP API.
    host: str = "127.0.0.1"
    port: int = 8000
    api_url: str | None = None  # what the CLI talks to; defaults to http://host:port
    max_query_chars: int = Field(default=4000, ge=1)
    max_document_bytes: int = Field(default=5_000_000, ge=1)
    max_queue_depth: int = Field(default=10_000, ge=1)
    redis_max_connections: int = Field(default=32, ge=4)

    # Who may call the API: "name=secret,name2=secret2", or one `name=secret` a line in
    # api_keys_file. A key sees only its own jobs, documents and collections; an admin key
    # sees everyone's and the operator's routes. With no key at all the API serves one local
    # user, and refuses to listen beyond loopback unless allow_anonymous says it may.
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    admin_keys: SecretStr | None = None
    allow_anonymous: bool = False
    # Signs the events URLs handed out for EventSource, which cannot send a key. Unset, it is
    # derived from the keys, so every API replica configured with the same keys agrees.
    token_secret: SecretStr | None = None
    events_token_ttl: int = Field(default=3600, ge=60)
    # The key the CLI sends (RAG_API_KEY).
    api_key: SecretStr | None = None

    # Quotas and limits. The per-key ones do not apply to the local user of an instance
    # without keys (quotas.py says why); 0 turns one off. Refusals are 429 with Retry-After,
    # or 413 / 431 for what is too big.
    # Requests a minute per key, a token bucket in Valkey shared by every API process: generous
    # for people and scripts that follow their jobs with SSE, a wall for a runaway loop. Up to
    # rate_limit_burst requests pass at once (unset: a minute's worth).
    rate_limit_per_minute: int = Field(default=600, ge=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    # Queued or running jobs per key. Kept well below max_queue_depth, so that a key flooding
    # the queue meets its own limit long before the global one refuses everybody else.
    max_unfinished_jobs_per_key: int = Field(default=1000, ge=0)
    # Bytes of documents (as uploaded) a key keeps in the registry: their chunks and vectors
    # fill Qdrant in proportion.
    max_stored_bytes_per_key: int = Field(default=1024**3, ge=0)
    # Bytes of results a key keeps in Valkey (its jobs' records and event logs, for the
    # result_ttl they live): beyond it new jobs are refused with 429 until old results
    # expire. Counted with every event written (store/results.py).
    max_result_bytes_per_key: int = Field(default=64 * 1024**2, ge=0)
    # Bytes of uploads waiting for their ingestion jobs (held in Valkey until the job ends),
    # all keys together: beyond it an upload is refused with 429 until workers catch up. One
    # upload is always let in when none is waiting. 0: no bound but the memory reserve.
    max_pending_upload_bytes: int = Field(default=128 * 1024**2, ge=0)
    # Files in one multipart upload: each becomes a job (the body's bytes are capped as well,
    # at about twice max_document_bytes).
    max_files_per_upload: int = Field(default=20, ge=1)
    # Open event streams per key, counted in each API process: each holds a connection, a
    # queue and a subscription. A page follows one job at a time.
    max_streams_per_key: int = Field(default=20, ge=0)
    # Those opened with a job's events_url token (EventSource, which cannot send a key: the
    # page), counted apart per key, so a token that leaked cannot use up the key's own.
    max_token_streams_per_key: int = Field(default=20, ge=0)
    # The same for the one local user of an instance without keys: generous (it is the only
    # user), but a runaway script of its own still leaves connections for the page and probes.
    max_streams_without_keys: int = Field(default=100, ge=0)
    # Request headers beyond this size are refused (431): a key, a cookie or two and a
    # Last-Event-ID take a few hundred bytes.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    # How `rag-async api` runs uvicorn (api/server.py). A connection whose request head has not
    # arrived in header_timeout seconds is closed (slow clients holding connections open), an
    # idle kept-alive one after keep_alive_timeout, and beyond max_connections (open event
    # streams included) a request gets 503 rather than the process running out of file
    # descriptors (often 1,024).
    header_timeout: float = Field(default=10.0, gt=0)
    keep_alive_timeout: int = Field(default=5, ge=1)
    max_connections: int = Field(default=1000, ge=1)
    # A request body (whatever the route, before its key is checked) is cut, with 408, when
    # nothing of it arrives for body_idle_timeout seconds, when past that grace it averages
    # under body_min_rate bytes a second (0: no minimum), and when all of it has not come
    # within body_timeout seconds: stalled bodies (slow POST) cannot hold connections.
    body_idle_timeout: float = Field(default=10.0, gt=0)
    body_min_rate: int = Field(default=1024, ge=0)
    body_timeout: float = Field(default=300.0, gt=0)
    # Connections open at once from one peer address (429 beyond it; 0: no cap), so that one
    # client cannot hold all of max_connections. Behind a reverse proxy every client has the
    # proxy's address: raise it (or 0) there and let the proxy cap each client.
    max_connections_per_client: int = Field(default=250, ge=0)

    # Fair share between keys (store/fair_share.py; docs/operations.md). Each key's jobs wait
    # in lists of their own and are handed to the workers in turn, a key of weight 2 twice as
    # often as one of weight 1 while both have jobs waiting: "name=weight,..." (others: 1).
    key_weights: str = ""
    # Jobs of one key running at once, per queue (0: no cap): beyond it the key's next job
    # waits, even with workers idle, so that no key holds every slot when others arrive.
    max_running_jobs_per_key: int = Field(default=0, ge=0)
    # Background jobs (background /v1 responses) handed on per interactive question at least,
    # while both wait: interactive ones go first, and background work still moves.
    background_share: float = Field(default=0.25, gt=0, le=1)

    # The worker.
    worker_max_jobs: int = Field(default=100, ge=1)  # questions at once, per process
    # Documents at once, per process: parsing and encoding use CPU, so a few are enough.
    worker_max_documents: int = Field(default=4, ge=1)
    # A job put on a queue nudges its workers (pub/sub, store/nudge.py), which start it at
    # once; arq's poll of the queue is then only the fallback, for what no nudge announces: a
    # deferred or retried job coming due, a nudge lost while Valkey was away. Off, the workers
    # only poll (a proxy without pub/sub), and want a short poll delay.
    worker_nudge: bool = True
    # arq polls its queue: a shorter delay starts unannounced jobs sooner and costs idle CPU
    # in the worker and in Valkey (figures per delay: docs/benchmarks.md, "arq's poll delay",
    # and "Nudged workers"). Without nudges, the delay is every job's queue wait.
    worker_poll_delay: float = Field(default=0.1, gt=0)
    # The document queue's worker polls less often: an upload does not notice a second.
    worker_document_poll_delay: float = Field(default=1.0, gt=0)
    # A job running longer than this is stopped and retried (then dead-lettered). A question's
    # limit stays short because it also bounds recovery if every worker is lost (recovery.py).
    question_timeout: float = Field(default=180.0, gt=0)
    document_timeout: float = Field(default=600.0, gt=0)
    # On SIGTERM a worker takes no new job and lets running ones finish for this long; what is
    # still running then is cancelled and stays queued for another worker (at-least-once).
    worker_shutdown_grace: int = Field(default=10, ge=0)
    # How often a worker reports itself (jobs running, breaker states) for /stats and /readyz.
    worker_heartbeat: float = Field(default=5.0, gt=0)
    # A worker silent for this long is taken for dead, and the jobs it held start again on
    # another worker (recovery.py): the bound on how long a crash delays an answer.
    worker_dead_after: float = Field(default=15.0, gt=0)
    job_max_tries: int = Field(default=3, ge=1)
    result_ttl: int = Field(default=24 * 3600, ge=60)

    # Hostile documents (parsing/limits.py, parsing/isolated.py). Uploaded files are parsed in
    # separate processes, parse_workers at most per worker process, each killed when its file
    # takes longer than parse_timeout seconds (wall clock; the same in CPU seconds is the
    # kernel's stop) or needs more than parse_memory_mb of address space. A file beyond a limit
    # fails at once with its code (parse_timeout, parse_memory, too_many_pages, too_much_text,
    # too_many_chunks, too_deep) and is never retried: the same bytes fail the same way.
    parse_workers: int = Field(default=2, ge=1)
    parse_timeout: float = Field(default=60.0, gt=0)  # an honest 5 MB PDF takes seconds
    parse_memory_mb: int = Field(default=1024, ge=64)  # a parse process idles at about 40 MB
    # A few kilobytes of PDF can name thousands of pages, each with its text. These let no file
    # cost more than an honest one of max_document_bytes: a 5 MB text file is 5 M characters,
    # about 8,000 chunks of 200 tokens, and a 5 MB PDF rarely 5,000 pages.
    max_pages: int = Field(default=5000, ge=1)
    max_document_chars: int = Field(default=5_000_000, ge=1)  # the text extracted from a file
    max_chunks: int = Field(default=10_000, ge=1)  # per document, checked while it is chunked

    # Retrieval.
    top_k: int = Field(default=4, ge=1, le=50)
    # How long POST /search waits for its job to end before it answers 202 with the job's id
    # (the job goes on; GET /jobs/{id} has its results). A search takes milliseconds: this
    # only rides out a queue of questions ahead of it.
    search_wait: float = Field(default=30.0, gt=0, le=600)
    # Characters of one retrieved passage that a question keeps (in its record and `sources`
    # event), streams and puts in its prompt; beyond it the passage is cut, marked `truncated`.
    # An honest chunk of chunk_tokens is far shorter: this stops a chunk that is not (a stored
    # one from before chunks were capped) from becoming a giant result or prompt.
    max_source_chars: int = Field(default=8000, ge=100)
    # Tokens as `parsing.chunking.count_tokens` counts them offline (words and punctuation
    # marks, so code counts for more than its whitespace words suggest).
    chunk_tokens: int = Field(default=200, ge=16)
    chunk_overlap: int = Field(default=40, ge=0)
    # A chunk's characters, whatever its tokens: a word longer than that (a file without
    # spaces) is cut into pieces. Prose runs about five characters a token.
    chunk_max_chars: int = Field(default=4000, ge=100)
    embed_model: str | None = None
    embed_base_url: str | None = None
    embed_api_key: SecretStr | None = None
    # Without RAG_EMBED_MODEL, the dense half of hybrid retrieval is a static model shipped in
    # a package (retrieval/static_embedder.py, the `dense` extra); "off": lexical only.
    offline_embedder: Literal["static", "off"] = "static"
    # Hybrid search fuses the lexical and the dense ranking by Qdrant's weighted reciprocal
    # rank: a chunk at rank r (from 0) of a list weighted w gets 1 / ((r + 1) / w + 1). A
    # weight above 1 lifts what that list found over what only the other found; it barely
    # reorders what both found (docs/benchmarks.md has weights measured).
    rrf_lexical_weight: float = Field(default=1.0, ge=0)
    rrf_dense_weight: float = Field(default=1.0, ge=0)
    # Results scoring below it are dropped. The score is BM25's for lexical retrieval and the
    # fused reciprocal-rank score for hybrid (at most `Fusion.best()`: 1 with equal weights).
    # /v1 compares its 0..1 relevance instead (domain/relevance.py).
    score_threshold: float | None = Field(default=None, ge=0)

    # Generation. With neither a base URL nor a key, the offline extractive answerer runs.
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RAG_LLM_API_KEY", "OPENAI_API_KEY")
    )
    llm_model: str = "gpt-4o-mini"
    llm_max_tokens: int = Field(default=512, ge=1)
    # A stalled or trickling stream fails in seconds, not after the SDK's 600 s.
    llm_timeout: float = Field(default=120.0, gt=0)  # the whole answer
    llm_connect_timeout: float = Field(default=5.0, gt=0)
    # Quick retries within one call to the LLM or the embedder (the LLM's only before any text
    # has streamed), with retry.py's backoff honouring Retry-After; beyond them the job is
    # retried by the worker and guarded by a breaker.
    llm_max_retries: int = Field(default=2, ge=0)
    llm_first_token_timeout: float = Field(default=30.0, gt=0)
    llm_idle_timeout: float = Field(default=15.0, gt=0)  # between two streamed chunks
    # After this many failures in a row a provider's breaker opens for breaker_reset seconds.
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_reset: float = Field(default=30.0, gt=0)

    # Streaming. Tokens are coalesced so Redis and browsers see tens of events per second.
    token_flush_interval: float = Field(default=0.05, ge=0)
    sse_ping_interval: float = Field(default=10.0, gt=0)
    sse_max_duration: float = Field(default=3600.0, gt=0)

    # The web page's static files: the repository's web/ unless set (the Docker image sets it).
    web_dir: Path | None = None

    # Browser safety (api/browser.py). Both are comma-separated lists.
    # The names the API answers to in the Host header: a DNS-rebinding page reaches a loopback
    # server under the attacker's own name, so any other name is refused ("*.example.com" takes
    # its subdomains, "*" any name). Unset: localhost, 127.0.0.1, ::1 and RAG_HOST (what the
    # CLI calls). /healthz and /readyz answer any Host (probes use the pod's IP).
    allowed_hosts: str | None = None
    # Origins (https://app.example.com) whose pages may call the API, with CORS; a request
    # from any other origin than the API's own is refused. "*" lets any page call it.
    cors_origins: str | None = None

    log_level: LogLevel = "INFO"
    # JSON lines on stderr, from our code and every library (uvicorn, arq, httpx, ...) alike.
    log_json: bool = False
    # A worker's own /metrics (its job stages, LLM tokens; rag_async/metrics/), on this port.
    # Unset: none. The host is loopback unless a scraper elsewhere needs it (0.0.0.0 in a pod).
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # OpenTelemetry traces (the `otel` extra): on with RAG_OTEL=true, or when the standard
    # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set; OTEL_* variables configure the exporter.
    otel: bool = False
    otel_exporter_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    demo_corpus: bool = True

    # Webhooks (rag_async/webhooks/): a job's `webhook_url`, or this default, is POSTed to when
    # the job ends, signed as Standard Webhooks says with webhook_secret ("whsec_" and the
    # base64 of 24 to 64 random bytes; without it no job may ask for a webhook).
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # The hosts webhooks may reach, comma-separated: names, "*.example.com" (its subdomains),
    # IP literals, and "*" (any host at a public address). Unset: "*". A listed name or
    # address may be private or loopback (the operator listed it); nothing else may, checked
    # when the job is accepted and again on the addresses resolved at each delivery.
    webhook_hosts: str | None = None
    webhook_timeout: float = Field(default=10.0, gt=0)  # one delivery, connect to response
    webhook_max_tries: int = Field(default=5, ge=1)  # then the delivery is dead-lettered

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A variable set in the environment or .env wins over its *_FILE.
        sources = (init_settings, env_settings, dotenv_settings, SecretFiles(settings_cls))
        return (*sources, file_secret_settings)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Standard Webhooks' form, so a receiver's library takes the same string."""
        if value is not None and not _is_webhook_secret(value.get_secret_value()):
            raise ValueError('must be "whsec_" and the base64 of 24 to 64 random bytes')
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """`debug` is as good as `DEBUG`; anything else is refused as it was given."""
        if isinstance(value, str) and value.upper() in get_args(LogLevel):
            return value.upper()
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A Redis or Qdrant URL may hold a password (the embedded Valkey's always does).
        for name, value in super().__repr_args__():
            yield name, redact(value) if name in _URLS and isinstance(value, str) else value

    @property
    def api_base_url(self) -> str:
        return (self.api_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def api_keys_configured(self) -> bool:
        return bool(self.api_keys or self.api_keys_file or self.admin_keys)

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url or self.llm_api_key)


def _is_webhook_secret(text: str) -> bool:
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        return False
    return text.startswith("whsec_") and 24 <= len(key) <= 64


def secret_file_fields() -> tuple[str, ...]:
    """The settings that also read `<their variable>_FILE`: every secret, and the Redis URL
    (it holds Valkey's password). Not api_keys, whose RAG_API_KEYS_FILE is a setting of its
    own (one `name=secret` a line)."""
    fields = Settings.model_fields
    secrets = [name for name, info in fields.items() if SecretStr in get_args(info.annotation)]
    return tuple(n for n in ["redis_url", *secrets] if f"{n}_file" not in fields)


class SecretFiles(PydanticBaseSettingsSource):
    """`RAG_LLM_API_KEY_FILE=/run/secrets/llm_api_key`: a secret setting read from the file a
    variable names, as Docker and Kubernetes mount secrets, so that the secret is in no
    environment (`docker inspect`, /proc/<pid>/environ). One trailing newline is dropped."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for field in secret_file_fields():
            alias = Settings.model_fields[field].validation_alias
            # A field with aliases is given under the alias its variable is (pydantic's rule).
            keys = [field]
            if isinstance(alias, AliasChoices):
                keys = [c for c in alias.choices if isinstance(c, str)]
            for key, name in zip(keys, _variables()[field], strict=True):
                if path := environ.get(f"{name}_FILE"):
                    values[key] = _read_secret(f"{name}_FILE", path)
                    break
        return values


def _read_secret(variable: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{variable}: cannot read {path}: {reason}") from None
    return text.removesuffix("\n").removesuffix("\r")


def load_settings() -> tuple[Settings, list[str]]:
    """Settings from the environment and `.env`, for an entry point; and a warning for each
    `RAG_*` variable that no setting reads (a misspelling is otherwise silently ignored).

    Raises `ConfigurationError` naming each variable whose value is not valid (`RAG_PORT`,
    not pydantic's `port`).
    """
    try:
        settings = Settings()
    except ValidationError as error:
        variables = _variables()
        problems = "; ".join(_problem(e, variables) for e in error.errors())
        raise ConfigurationError(f"invalid configuration: {problems}") from None
    return settings, _unknown_variables()


def _variables() -> dict[str, tuple[str, ...]]:
    """The environment variables each field reads, upper case (pydantic-settings ignores case)."""
    prefix = Settings.model_config.get("env_prefix", "")
    variables: dict[str, tuple[str, ...]] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            variables[field] = tuple(c.upper() for c in alias.choices if isinstance(c, str))
        else:
            variables[field] = ((alias if isinstance(alias, str) else prefix + field).upper(),)
    return variables


def _problem(error: ErrorDetails, variables: dict[str, tuple[str, ...]]) -> str:
    """One error in the words of the environment: `RAG_PORT: Input should be ..., got 'abc'`."""
    if not error["loc"]:
        return error["msg"]
    field = str(error["loc"][0])
    names = variables.get(field, (field.upper(),))
    # Of a field's variables (RAG_LLM_API_KEY, OPENAI_API_KEY), the one that is set.
    present = {name.upper() for name in os.environ}
    name = next((n for n in names if n in present), names[0])
    secret = field.endswith(("_key", "_keys", "_url", "_secret"))  # a URL may hold a password
    return f"{name}: {error['msg']}" + ("" if secret else f", got {error['input']!r}")


def _unknown_variables() -> list[str]:
    prefix = Settings.model_config.get("env_prefix", "").upper()
    known = [
        name.removeprefix(prefix)
        for names in _variables().values()
        for name in names
        if name.startswith(prefix)
    ]
    variables = _variables()
    known += [
        f"{name.removeprefix(prefix)}_FILE"
        for field in secret_file_fields()
        for name in variables[field]
        if name.startswith(prefix)
    ]
    found = [(name, "") for name in os.environ]
    env_file = Settings.model_config.get("env_file")
    if isinstance(env_file, str):
        found += [(name, f" (in {env_file})") for name in dotenv_values(env_file)]
    warnings = []
    for name, where in found:
        suffix = name.upper().removeprefix(prefix)
        if not name.upper().startswith(prefix) or suffix in known:
            continue
        close = difflib.get_close_matches(suffix, known, n=1)
        hint = f"; did you mean {prefix}{close[0]}?" if close else ""
        warnings.append(f"{name}{where} is not a setting of rag-async and is ignored{hint}")
    return warnings
