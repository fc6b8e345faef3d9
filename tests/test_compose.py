"""docker-compose.yml and the Dockerfile, checked without a Docker engine: their structure, and
that what they pass to the image (commands, RAG_* variables) is what the code understands.

Not done here: validation against the compose-spec JSON schema (no package providing the
schema is installed, and nothing may be downloaded), and building or running the images.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import AliasChoices

from rag_async.api.browser import allowed_hosts
from rag_async.cli import app as cli_app
from rag_async.config import Settings
from rag_async.identity import check_exposure

REPO = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (REPO / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
RAG_SERVICES = ("api", "worker")


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
        names.add(f"RAG_{name.upper()}")
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias)
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


def test_the_four_services() -> None:
    assert set(SERVICES) == {"valkey", "qdrant", "api", "worker"}


def test_workers_can_be_scaled() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker, "--scale worker=N needs compose to name them"
    assert "ports" not in worker, "N workers cannot publish the same host port"
    # The data stores stay inside the compose network; only the API is published.
    assert [name for name, spec in SERVICES.items() if "ports" in spec] == ["api"]


def test_api_and_worker_run_the_same_image_against_the_same_servers() -> None:
    api, worker = SERVICES["api"], SERVICES["worker"]
    assert api.get("build") and api["build"] == worker.get("build")
    assert api.get("image") == worker.get("image")
    api_env, worker_env = _environment("api"), _environment("worker")
    assert api_env == worker_env
    redis = urlsplit(api_env["RAG_REDIS_URL"])
    qdrant = urlsplit(api_env["RAG_QDRANT_URL"])
    assert (redis.scheme, redis.hostname, redis.port) == ("redis", "valkey", 6379)
    assert (qdrant.scheme, qdrant.hostname, qdrant.port) == ("http", "qdrant", 6333)


def test_valkey_keeps_its_data() -> None:
    valkey = SERVICES["valkey"]
    assert valkey["image"] == "valkey/valkey:8"
    command = valkey["command"]
    args = command if isinstance(command, list) else shlex.split(command)
    assert args[args.index("--appendonly") + 1] == "yes"
    mounts = [_named_volume(mount) for mount in valkey["volumes"]]
    assert any(name and target == "/data" for name, target in mounts), mounts
    assert "valkey-cli ping" in _healthcheck("valkey")


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
    ours = {n for n in passed | referenced | in_image if n.startswith("RAG_")}
    assert ours, "the services are configured through RAG_* variables"
    assert ours <= known, f"not Settings fields: {sorted(ours - known)}"
    others = passed - ours
    assert others <= known, f"passed to the app but read by nothing: {sorted(others - known)}"
    # The optional providers are passed through from the shell.
    for name in ("RAG_LLM_BASE_URL", "RAG_LLM_API_KEY", "OPENAI_API_KEY", "RAG_EMBED_MODEL"):
        assert _environment("worker")[name] == f"${{{name}:-}}", name


@pytest.mark.parametrize(
    ("host", "llm_api_key"),
    [({}, None), ({"OPENAI_API_KEY": "sk-from-the-shell"}, "sk-from-the-shell")],
)
def test_the_containers_settings(
    host: dict[str, str], llm_api_key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment compose gives a container builds valid Settings; the optional variables
    it passes through empty mean "not set" (an empty RAG_LLM_API_KEY must not hide
    OPENAI_API_KEY, an empty RAG_LLM_BASE_URL must not replace the SDK's default URL)."""
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in _environment("worker").items():
        monkeypatch.setenv(name, _interpolate(value, host))
    settings = Settings(_env_file=None)
    assert settings.redis_url == "redis://valkey:6379/0"
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
