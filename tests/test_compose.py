"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the compose-spec
schema (check-jsonschema ships it), their structure, and that what they pass to the image
(commands, RAG_* variables, secret files, .env.example) is what the code understands. The
worker's healthcheck runs against a real Valkey and a real worker.

Not done here: building or running the images (no Docker engine).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import promql_parser
import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from rag_async.api.browser import allowed_hosts
from rag_async.client.cli import app as cli_app
from rag_async.config import Settings, load_settings, secret_file_fields
from rag_async.domain.errors import ConfigurationError
from rag_async.domain.identity import KeyRing, check_exposure
from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import make_settings, running_worker

REPO = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
RAG_SERVICES = ("api", "worker")
MONITORING = ("prometheus", "grafana")
# The worker's metrics settings: the metrics work of issue 12 adds them to Settings.
METRICS_CONTRACT = {"RAG_WORKER_METRICS_HOST", "RAG_WORKER_METRICS_PORT"}


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


DOCKERFILE = _dockerfile()


def _console_scripts() -> set[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"])


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


_REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?-(?P<default>[^}]*))?\}|\$"
)


def _interpolate(value: str, host: Mapping[str, str]) -> str:
    """What compose makes of `value` with `host` as the shell's environment (the forms this
    file uses: `$$`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name")
        assert name, f"a bare '$' in {value!r}: compose would try to interpolate it"
        if match.group("op") is None:
            return host.get(name, "")
        if match.group("op").startswith(":"):
            return host.get(name) or match.group("default")
        return host.get(name, match.group("default"))

    return _REFERENCE.sub(substitute, value)


def _settings_variables() -> set[str]:
    """Every environment variable that Settings reads."""
    names = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
        else:
            names.add(f"RAG_{name.upper()}")
    return names


def _named_volume(mount: str | dict[str, Any]) -> tuple[str | None, str]:
    """(named volume or None for a bind mount, target path) of a service's volume entry."""
    if isinstance(mount, dict):
        source = mount.get("source")
        return (source if mount.get("type", "volume") == "volume" else None), mount["target"]
    source, _, rest = mount.partition(":")
    target = rest.partition(":")[0]
    return (None if source.startswith((".", "/", "~")) else source), target


def _depends_on(service: str) -> dict[str, str]:
    """{target: condition} of a service's depends_on (the list form means service_started)."""
    depends = SERVICES[service].get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _healthcheck(service: str) -> str:
    test = SERVICES[service]["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def _secret_files(tmp_path: Path) -> dict[str, str]:
    """What deploy/compose/make-secrets.sh makes, in tmp_path: {compose secret: its file}."""
    script = REPO / "deploy" / "compose" / "make-secrets.sh"
    subprocess.run(["sh", str(script), str(tmp_path)], check=True, capture_output=True)
    return {name: str(tmp_path / name) for name in COMPOSE["secrets"]}


def _container_environment(service: str, host: Mapping[str, str], files: Mapping[str, str]):
    """The environment a container of `service` gets (without .env), its /run/secrets/ paths
    replaced by the files made for the test."""
    env = {name: _interpolate(value, host) for name, value in _environment(service).items()}
    for name, value in env.items():
        if value.startswith("/run/secrets/"):
            env[name] = files[value.removeprefix("/run/secrets/")]
    return env


def test_the_services() -> None:
    assert set(SERVICES) == {"valkey", "qdrant", "api", "worker", *MONITORING}
    # Prometheus and Grafana start with `--profile monitoring` only.
    assert {name for name, spec in SERVICES.items() if spec.get("profiles")} == set(MONITORING)
    for name in MONITORING:
        assert SERVICES[name]["profiles"] == ["monitoring"]


def test_the_compose_spec_schema() -> None:
    """The compose-spec JSON schema, as check-jsonschema ships it (no network)."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "check_jsonschema"),
            *("--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workers_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker, "--scale worker=N needs compose to name them"
    assert "ports" not in worker, "N workers cannot publish the same host port"
    # The data stores stay inside the compose network; the API and the monitoring UIs are
    # published, the UIs on the host's loopback only.
    published = [name for name, spec in SERVICES.items() if "ports" in spec]
    assert published == ["api", *MONITORING]
    for name in MONITORING:
        assert all(str(port).startswith("127.0.0.1:") for port in SERVICES[name]["ports"])


def test_images_are_pinned() -> None:
    for name, spec in SERVICES.items():
        if "build" in spec:
            continue
        tag = spec["image"].partition(":")[2]
        assert tag and tag != "latest", f"{name}: {spec['image']} is not pinned"
    # Qdrant to the release: its storage format only moves forward.
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", SERVICES["qdrant"]["image"])


def test_every_service_has_resource_limits() -> None:
    for name, spec in SERVICES.items():
        limits = spec["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and re.fullmatch(r"\d+[mg]", limits["memory"]), name


def test_the_worker_outlives_its_drain() -> None:
    """`docker compose stop` SIGTERMs the worker, then SIGKILLs it after stop_grace_period:
    that must leave its drain (RAG_WORKER_SHUTDOWN_GRACE) and closing its clients time."""
    grace = Settings.model_fields["worker_shutdown_grace"].default
    stop = SERVICES["worker"]["stop_grace_period"]
    seconds = int(re.fullmatch(r"(\d+)s", stop).group(1))  # type: ignore[union-attr]
    assert seconds >= grace + 10, (stop, grace)
    assert SERVICES["worker"]["init"] is True  # tini: reaps the parse processes


def test_api_and_worker_run_the_same_image_against_the_same_servers() -> None:
    api, worker = SERVICES["api"], SERVICES["worker"]
    assert api.get("build") and api["build"] == worker.get("build")
    assert api.get("image") == worker.get("image")
    api_env, worker_env = _environment("api"), _environment("worker")
    assert api_env == worker_env
    assert api_env["RAG_REDIS_URL_FILE"] == "/run/secrets/redis_url"
    qdrant = urlsplit(api_env["RAG_QDRANT_URL"])
    assert (qdrant.scheme, qdrant.hostname, qdrant.port) == ("http", "qdrant", 6333)


def test_valkey_keeps_its_data_behind_a_password() -> None:
    valkey = SERVICES["valkey"]
    assert valkey["image"].startswith("valkey/valkey:")
    command = valkey["command"]
    assert command[:2] == ["sh", "-c"]
    args = shlex.split(command[2])
    # Through the image's entrypoint (it drops root), as valkey-server.
    assert args[:3] == ["exec", "docker-entrypoint.sh", "valkey-server"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"  # never evict a job
    password = args[args.index("--requirepass") + 1]
    assert password == "$$(cat /run/secrets/valkey_password)"
    assert valkey["secrets"] == ["valkey_password"]
    mounts = [_named_volume(mount) for mount in valkey["volumes"]]
    assert any(name and target == "/data" for name, target in mounts), mounts
    assert "valkey-cli ping" in _healthcheck("valkey")
    assert "REDISCLI_AUTH=" in _healthcheck("valkey")


def test_the_secret_files(tmp_path: Path) -> None:
    """make-secrets.sh makes every file the compose file mounts, the Redis URL carrying
    Valkey's password, in a folder that is the user's only; git and the image leave it out."""
    files = _secret_files(tmp_path)
    for name, spec in COMPOSE["secrets"].items():
        assert spec["file"] == f"./secrets/{name}"
        assert Path(files[name]).read_text().strip()
    password = Path(files["valkey_password"]).read_text()
    assert len(password) >= 32
    assert Path(files["redis_url"]).read_text() == f"redis://:{password}@valkey:6379/0"
    assert oct(tmp_path.stat().st_mode & 0o777) == oct(0o700)
    before = {name: Path(path).read_text() for name, path in files.items()}
    _secret_files(tmp_path)  # a second run keeps them
    assert before == {name: Path(path).read_text() for name, path in files.items()}
    ignored = (REPO / ".gitignore").read_text().split()
    assert "secrets/" in ignored and ".env" in ignored
    assert {"secrets", ".env"} <= set((REPO / ".dockerignore").read_text().split())


def test_every_file_variable_names_a_mounted_secret() -> None:
    declared = set(COMPOSE["secrets"])
    for name, spec in SERVICES.items():
        env = spec.get("environment", {})
        mounted = set(spec.get("secrets", []))
        assert mounted <= declared, name
        for variable, value in env.items():
            if variable.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), variable
                assert value.removeprefix("/run/secrets/") in mounted, (name, variable)


def test_qdrant_keeps_its_data_and_is_awaited() -> None:
    qdrant = SERVICES["qdrant"]
    assert qdrant["image"].startswith("qdrant/qdrant")
    assert "/qdrant/storage" in [_named_volume(m)[1] for m in qdrant["volumes"]]
    assert "6333" in _healthcheck("qdrant") and "readyz" in _healthcheck("qdrant")
    assert _depends_on("worker")["qdrant"] == "service_healthy"


def test_api_listens_on_all_interfaces_and_is_checked() -> None:
    api = SERVICES["api"]
    assert api["command"] == ["rag-async", "api"]
    assert SERVICES["worker"]["command"] == ["rag-async", "worker"]
    env = _environment("api")
    assert env["RAG_HOST"] == "0.0.0.0"
    port = int(_interpolate(env.get("RAG_PORT", str(Settings.model_fields["port"].default)), {}))
    published = [str(p).rpartition(":")[2] for p in api["ports"]]
    assert str(port) in published
    assert f"127.0.0.1:{port}/healthz" in _healthcheck("api")
    assert _depends_on("api")["valkey"] == "service_healthy"
    assert _depends_on("worker")["valkey"] == "service_healthy"


def test_the_keyless_api_is_published_on_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without keys the API serves anyone who reaches it: the container may listen on all of
    its interfaces (it is asked to, RAG_ALLOW_ANONYMOUS), but the host publishes the port on
    its loopback only, unless told otherwise."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in _environment("api").items():
        monkeypatch.setenv(name, _interpolate(value, {}))
    monkeypatch.delenv("RAG_REDIS_URL_FILE")
    settings = Settings(_env_file=None)
    assert not settings.api_keys_configured
    check_exposure(settings)  # the container starts
    published = [_interpolate(str(p), {}) for p in SERVICES["api"]["ports"]]
    assert published == ["127.0.0.1:8000:8000"]


def test_every_variable_passed_is_one_the_settings_read() -> None:
    known = _settings_variables()
    passed = {name for service in RAG_SERVICES for name in _environment(service)}
    referenced = {m.group("name") for m in _REFERENCE.finditer(COMPOSE_TEXT) if m.group("name")}
    in_image = {
        name
        for keyword, args in DOCKERFILE
        if keyword == "ENV"
        for name in (item.partition("=")[0] for item in shlex.split(args))
    }
    known |= {f"{name}_FILE" for name in known}
    known |= METRICS_CONTRACT
    ours = {n for n in passed | referenced | in_image if n.startswith("RAG_")}
    assert ours, "the services are configured through RAG_* variables"
    assert ours <= known, f"not Settings fields: {sorted(ours - known)}"
    others = passed - ours
    assert others <= known, f"passed to the app but read by nothing: {sorted(others - known)}"


def test_every_setting_is_reachable_through_the_env_file() -> None:
    """The API and the workers read .env (optional), and .env.example lists every variable
    Settings reads, with the *_FILE of each secret: it is what env_example.py writes."""
    for service in RAG_SERVICES:
        assert SERVICES[service]["env_file"] == [{"path": ".env", "required": False}]
    sys.path.insert(0, str(REPO / "deploy" / "compose"))
    try:
        from env_example import render  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "deploy" / "compose"))
    example = (REPO / ".env.example").read_text()
    assert example == render(), "run: python deploy/compose/env_example.py > .env.example"
    listed = set(re.findall(r"^# ([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    files = {f"{name}_FILE" for name in _settings_variables() if _reads_a_file(name)}
    assert listed == _settings_variables() | files
    assert "RAG_REDIS_URL_FILE" in listed and "RAG_LLM_API_KEY_FILE" in listed


def _reads_a_file(variable: str) -> bool:
    fields = secret_file_fields()
    return any(
        variable == f"RAG_{field.upper()}" or variable in _aliases(field) for field in fields
    )


def _aliases(field: str) -> list[str]:
    alias = Settings.model_fields[field].validation_alias
    return (
        [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
    )


@pytest.mark.parametrize(
    ("host", "llm_api_key"),
    [({}, None), ({"OPENAI_API_KEY": "sk-from-the-shell"}, "sk-from-the-shell")],
)
def test_the_containers_settings(
    host: dict[str, str],
    llm_api_key: str | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The environment compose gives a container builds valid Settings, the Redis URL with
    Valkey's password read from its secret file; empty variables mean "not set" (an empty
    RAG_LLM_API_KEY must not hide OPENAI_API_KEY)."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    files = _secret_files(tmp_path)
    for name, value in _container_environment("worker", host, files).items():
        monkeypatch.setenv(name, value)
    for name, value in host.items():  # as the .env would give them
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAG_LLM_API_KEY", "")
    settings = Settings(_env_file=None)
    password = Path(files["valkey_password"]).read_text()
    assert settings.redis_url == f"redis://:{password}@valkey:6379/0"
    assert settings.qdrant_url == "http://qdrant:6333"
    assert settings.host == "0.0.0.0" and settings.port == 8000
    key = settings.llm_api_key
    assert (key.get_secret_value() if key else None) == llm_api_key
    assert settings.llm_base_url is None and settings.embed_model is None
    assert settings.llm_configured == bool(llm_api_key)


def test_the_api_answers_to_its_service_name_and_the_published_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other containers reach it as `api:8000`, the host through the published port as
    localhost, `rag-async` inside the container as 0.0.0.0 (RAG_HOST): Host names it must
    accept, and no other (DNS rebinding)."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in _environment("api").items():
        monkeypatch.setenv(name, _interpolate(value, {}))
    monkeypatch.delenv("RAG_REDIS_URL_FILE")
    hosts = allowed_hosts(Settings(_env_file=None))
    assert {"api", "localhost", "127.0.0.1", "0.0.0.0"} <= set(hosts), hosts
    assert not [host for host in hosts if "*" in host], hosts


def test_every_dollar_is_an_interpolation_or_escaped() -> None:
    for match in _REFERENCE.finditer(COMPOSE_TEXT):
        assert match.group(0) == "$$" or match.group("name"), (
            f"a bare '$' at offset {match.start()}: write '$$' for a literal dollar"
        )


def test_the_commands_are_installed_console_scripts() -> None:
    scripts = _console_scripts()
    subcommands = set(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]
    commands = [SERVICES[name]["command"] for name in RAG_SERVICES]
    commands += [json.loads(args) for keyword, args in DOCKERFILE if keyword == "CMD"]
    entrypoints = [json.loads(args) for keyword, args in DOCKERFILE if keyword == "ENTRYPOINT"]
    assert not entrypoints, "compose's `command: [rag-async, ...]` assumes no ENTRYPOINT"
    for command in commands:
        assert isinstance(command, list), f"{command!r}: use the exec form (signals reach it)"
        program, subcommand = command[:2]
        assert program in scripts
        assert subcommand in subcommands


def test_the_image() -> None:
    keywords = [keyword for keyword, _ in DOCKERFILE]
    assert DOCKERFILE[0] == ("FROM", "python:3.11-slim")
    assert keywords.count("FROM") == 1
    # It installs the package, then drops root for good.
    installs = [i for i, (k, args) in enumerate(DOCKERFILE) if k == "RUN" and "pip install" in args]
    users = [i for i, (k, _) in enumerate(DOCKERFILE) if k == "USER"]
    assert installs and users and users[-1] > installs[-1]
    assert DOCKERFILE[users[-1]][1] not in ("root", "0", "0:0")
    # What it copies exists (a missing file fails `docker compose build`).
    for keyword, args in DOCKERFILE:
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (REPO / source).exists(), f"the Dockerfile copies {source}: missing"
    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("readme")
    if isinstance(readme, str):
        copied = [s for k, a in DOCKERFILE if k == "COPY" for s in shlex.split(a)]
        assert readme in copied, "the package build reads the README: the image must copy it"


def test_volumes_and_dependencies_are_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = {
        name
        for spec in SERVICES.values()
        for mount in spec.get("volumes", [])
        if (name := _named_volume(mount)[0])
    }
    assert used == declared, (used, declared)
    for name in SERVICES:
        for target, condition in _depends_on(name).items():
            assert target in SERVICES, f"{name} depends on {target}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{target} has no healthcheck"


async def _worker_healthcheck(env: Mapping[str, str]) -> int:
    test = SERVICES["worker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", test[3], env=dict(env), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode in (0, 1), stderr.decode()  # an answer, not a traceback
    return process.returncode


async def test_the_worker_healthcheck_follows_its_heartbeat(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """The worker's healthcheck, run as Docker runs it (the same command, the Redis URL from
    the secret file): unhealthy while no worker of this host beats, healthy while one does,
    unhealthy again once it has stopped."""
    settings = make_settings(valkey, tmp_path)
    assert settings.redis_url
    url_file = tmp_path / "redis_url"
    url_file.write_text(settings.redis_url + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "RAG_REDIS_URL_FILE": str(url_file),
        "RAG_KEY_PREFIX": settings.key_prefix,
    }
    assert await _worker_healthcheck(env) == 1
    async with running_worker(settings):
        deadline = time.monotonic() + 10
        while await _worker_healthcheck(env) != 0:
            assert time.monotonic() < deadline, "the healthcheck never saw the heartbeat"
    # A stopped worker removes its beat (and a killed one goes stale).
    assert await _worker_healthcheck(env) == 1
    assert socket.gethostname()  # the beat it looks for is this host's


def test_the_api_healthcheck_asks_healthz() -> None:
    test = SERVICES["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3]


def test_a_secret_setting_reads_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "url").write_text("redis://:pw@valkey:6379/0\n")  # an editor's newline
    (tmp_path / "key").write_text("sk-from-a-file")
    monkeypatch.setenv("RAG_REDIS_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("OPENAI_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("RAG_ADMIN_KEYS_FILE", str(tmp_path / "key"))
    settings, warnings = load_settings()
    assert settings.redis_url == "redis://:pw@valkey:6379/0"
    assert settings.llm_api_key and settings.llm_api_key.get_secret_value() == "sk-from-a-file"
    assert settings.admin_keys and settings.admin_keys.get_secret_value() == "sk-from-a-file"
    assert warnings == []  # *_FILE variables are known ones
    # The variable itself, when set, wins over its file.
    monkeypatch.setenv("RAG_REDIS_URL", "redis://elsewhere:6379/0")
    assert load_settings()[0].redis_url == "redis://elsewhere:6379/0"


def test_a_missing_secret_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAG_TOKEN_SECRET_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigurationError, match=r"RAG_TOKEN_SECRET_FILE: cannot read .*absent"):
        load_settings()
    monkeypatch.setenv("RAG_TOKEN_SECRET_FILE", str(tmp_path))  # a folder
    with pytest.raises(ConfigurationError, match="RAG_TOKEN_SECRET_FILE"):
        load_settings()


def test_only_secrets_read_files() -> None:
    fields = set(secret_file_fields())
    assert {"redis_url", "llm_api_key", "embed_api_key", "qdrant_api_key"} <= fields
    assert {"admin_keys", "token_secret", "api_key"} <= fields
    # api_keys has a file setting of its own (RAG_API_KEYS_FILE, one key a line).
    assert "api_keys" not in fields and "port" not in fields


MONITORING_DIR = REPO / "deploy" / "monitoring"
CONTRACT_METRICS = {
    "rag_queue_depth",
    "rag_jobs_in_flight",
    "rag_queue_oldest_age_seconds",
    "rag_dead_letters",
    "rag_workers_alive",
    "rag_jobs_total",
    "rag_breaker_open",
    "rag_job_stage_seconds_bucket",
    "rag_llm_tokens_total",
    "rag_sse_connections",
}


def _mounts(service: str) -> dict[str, str]:
    """{path in the container: path in the repository} of a service's bind mounts."""
    mounts = {}
    for mount in SERVICES[service]["volumes"]:
        source, _, rest = mount.partition(":")
        if source.startswith("./"):
            mounts[rest.partition(":")[0]] = source
    return mounts


def test_prometheus_scrapes_the_api_and_every_worker() -> None:
    mounts = _mounts("prometheus")
    config = yaml.safe_load((REPO / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["rag-async-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["static_configs"][0]["targets"] == ["api:8000"]
    # Every replica of `worker`, on the port its containers serve metrics on.
    workers = jobs["rag-async-worker"]["dns_sd_configs"][0]
    assert workers["names"] == ["worker"] and workers["type"] == "A"
    assert str(workers["port"]) == _environment("worker")["RAG_WORKER_METRICS_PORT"]
    assert _environment("worker")["RAG_WORKER_METRICS_HOST"] == "0.0.0.0"
    # Its rules are the alerts file, mounted where the config says.
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/monitoring/alerts.yml"
    # The API answers to the name Prometheus uses (Host header).
    assert "api" in _interpolate(_environment("api")["RAG_ALLOWED_HOSTS"], {}).split(",")


def test_grafana_is_provisioned_with_the_dashboard() -> None:
    mounts = _mounts("grafana")
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    source = sources["datasources"][0]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    providers = yaml.safe_load((provisioning / "dashboards" / "rag-async.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    dashboards = REPO / mounts[path]
    dashboard = json.loads((dashboards / "rag-async.json").read_text())
    assert dashboard["uid"] == "rag-async"
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(t["datasource"]["uid"] == source["uid"] for t in targets)
    environment = SERVICES["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")


def test_the_dashboard_shows_the_contract_metrics() -> None:
    """Queue depth, latency percentiles, outcomes and breakers, in the metric names of
    issue 12, each query valid PromQL."""
    path = MONITORING_DIR / "grafana" / "dashboards" / "rag-async.json"
    dashboard = json.loads(path.read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            promql_parser.parse(target["expr"])  # raises on a syntax error
            used |= set(re.findall(r"\brag_[a-z_]+", target["expr"]))
    assert used <= CONTRACT_METRICS, used - CONTRACT_METRICS
    assert not CONTRACT_METRICS - used, CONTRACT_METRICS - used
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs


def test_keys_from_the_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the two lines the compose file's comment gives, the API has keys from the mounted
    files: the `metrics` user and the `prometheus` admin, whose key /metrics wants."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    files = _secret_files(tmp_path)
    assert {"api_keys", "admin_keys"} <= set(SERVICES["api"]["secrets"])
    for name, value in _container_environment("api", {}, files).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAG_API_KEYS_FILE", files["api_keys"])
    monkeypatch.setenv("RAG_ADMIN_KEYS_FILE", files["admin_keys"])
    settings, warnings = load_settings()
    assert settings.api_keys_configured and warnings == []
    keys = KeyRing.from_settings(settings)
    prometheus = keys.identify(Path(files["prometheus_api_key"]).read_text())
    metrics = keys.identify((tmp_path / "keda_api_key").read_text())
    assert prometheus is not None and prometheus.admin
    assert metrics is not None and not metrics.admin
