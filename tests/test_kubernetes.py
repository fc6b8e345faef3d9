"""deploy/kubernetes/, checked offline: every manifest against Kubernetes' own schemas (as the
kubernetes-validate package ships them, strict: an unknown field fails), the KEDA objects
against the schema of KEDA's CRD checked in beside them, and what the manifests promise the
service: probes on its routes, a worker grace above its drain, disruption budgets that select
the pods, secrets from a Secret only, KEDA's formula in the metric names of issue 12.

The kustomization is rendered with `kubectl kustomize` when kubectl is installed (it is on the
machine these tests were written on); without it, the files its `resources` list are checked
one by one (no generators, no patches).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from dotenv import dotenv_values
from pydantic import AliasChoices

from rag_async.config import Settings, secret_file_fields
from rag_async.domain.identity import KeyRing
from rag_async.local.valkey import EmbeddedValkey
from tests.conftest import make_settings, running_api

REPO = Path(__file__).resolve().parent.parent
KUBE = REPO / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAYS = [KUBE / "overlays" / "metrics-api"]
# The oldest Kubernetes release still maintained when these were written.
KUBERNETES_VERSION = "1.31.0"
KEDA_SCHEMAS = {
    "ScaledObject": KUBE / "schemas" / "keda-scaledobject.schema.json",
    "TriggerAuthentication": KUBE / "schemas" / "keda-triggerauthentication.schema.json",
}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resource_files(kustomization_dir: Path) -> list[Path]:
    """The files a kustomization's `resources` names, its bases' too."""
    kustomization = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    files = []
    for entry in kustomization.get("resources", []):
        path = (kustomization_dir / entry).resolve()
        files += _resource_files(path) if path.is_dir() else [path]
    return files


def _base_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """{(kind, name): object} of the base's files, as written."""
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for path in _resource_files(BASE)
        for doc in _documents(path)
    }


OBJECTS = _base_objects()
CONFIG = {k: v or "" for k, v in dotenv_values(BASE / "config.env").items()}


def _container(kind: str, name: str) -> dict[str, Any]:
    containers = OBJECTS[(kind, name)]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _validate(doc: dict[str, Any]) -> None:
    kind = doc["kind"]
    if doc["apiVersion"].startswith("keda.sh/"):
        schema = json.loads(KEDA_SCHEMAS[kind].read_text())
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", _resource_files(BASE), ids=lambda p: p.name)
def test_each_resource_file_is_valid(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        _validate(doc)


@pytest.mark.parametrize("overlay", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_the_rendered_kustomization_is_valid(overlay: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl to render the kustomization; the files are checked one by one")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    kinds = {doc["kind"] for doc in docs}
    assert {"StatefulSet", "Deployment", "Service", "ScaledObject", "ConfigMap"} <= kinds
    for doc in docs:
        _validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "rag-async", doc["metadata"]
    # The generated ConfigMap (its name carries a hash) is the one the pods read.
    maps = [doc["metadata"]["name"] for doc in docs if doc["kind"] == "ConfigMap"]
    for doc in docs:
        if doc["kind"] == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert container["envFrom"][0]["configMapRef"]["name"] in maps


def test_the_validators_refuse_what_is_wrong() -> None:
    """The schemas catch a misspelt field and a wrong type, in Kubernetes' objects and KEDA's."""
    worker = json.loads(json.dumps(OBJECTS[("Deployment", "worker")]))
    worker["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(worker)
    scaled = json.loads(json.dumps(OBJECTS[("ScaledObject", "worker")]))
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 80  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)
    scaled = json.loads(json.dumps(OBJECTS[("ScaledObject", "worker")]))
    scaled["spec"]["minReplicas"] = 1
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)


def _settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            names.update(c for c in field.validation_alias.choices if isinstance(c, str))
        else:
            names.add(f"RAG_{name.upper()}")
    return names


def test_the_config_map_holds_settings_and_no_secret() -> None:
    known = _settings_variables()
    files = {f"RAG_{field.upper()}_FILE" for field in secret_file_fields()}
    assert set(CONFIG) <= known | files | {"RAG_API_KEYS_FILE"}, set(CONFIG) - known - files
    secret_variables = {f"RAG_{field.upper()}" for field in secret_file_fields()}
    assert not set(CONFIG) & (secret_variables | {"RAG_API_KEYS"}), "a secret in a ConfigMap"
    # Each file it names is in the Secret's volume, which every pod mounts there.
    for variable, value in CONFIG.items():
        if variable.endswith("_FILE"):
            assert value.startswith("/run/secrets/rag-async/"), variable
    for kind, name in (("Deployment", "api"), ("Deployment", "worker")):
        spec = OBJECTS[(kind, name)]["spec"]["template"]["spec"]
        container = _container(kind, name)
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        secret = next(n for n, v in volumes.items() if "secret" in v)
        assert volumes[secret]["secret"]["secretName"] == "rag-async"
        assert mounts[secret] == "/run/secrets/rag-async"
        assert "env" not in container, "settings come from the ConfigMap, secrets from files"
        assert container["envFrom"] == [{"configMapRef": {"name": "rag-async"}}]
    # The settings it gives build valid Settings (secret files aside).
    values = {k: v for k, v in CONFIG.items() if not k.endswith("_FILE")}
    fields = {k.removeprefix("RAG_").lower(): v for k, v in values.items()}
    Settings(_env_file=None, **fields)


def test_the_workers_outlive_their_drain() -> None:
    """Kubernetes SIGKILLs a pod terminationGracePeriodSeconds after its SIGTERM: the worker
    must have had RAG_WORKER_SHUTDOWN_GRACE to let its jobs finish, and time to close."""
    spec = OBJECTS[("Deployment", "worker")]["spec"]["template"]["spec"]
    grace = int(CONFIG["RAG_WORKER_SHUTDOWN_GRACE"])
    assert spec["terminationGracePeriodSeconds"] >= grace + 20
    assert _container("Deployment", "worker")["command"] == ["rag-async", "worker"]


def test_the_api_probes_its_routes() -> None:
    container = _container("Deployment", "api")
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == int(CONFIG["RAG_PORT"]) and CONFIG["RAG_HOST"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = OBJECTS[("Service", "api")]
    labels = OBJECTS[("Deployment", "api")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_worker_probe_is_the_compose_healthcheck() -> None:
    """One heartbeat check for both (tests/test_compose.py runs it against a real worker)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    check = compose["services"]["worker"]["healthcheck"]["test"][3]
    probe = _container("Deployment", "worker")["livenessProbe"]["exec"]["command"]
    assert probe == ["python", "-c", check]


def test_valkey_is_persistent_and_guarded() -> None:
    valkey = OBJECTS[("StatefulSet", "valkey")]
    claims = valkey["spec"]["volumeClaimTemplates"]
    mounts = _container("StatefulSet", "valkey")["volumeMounts"]
    assert {m["name"]: m["mountPath"] for m in mounts}[claims[0]["metadata"]["name"]] == "/data"
    command = " ".join(_container("StatefulSet", "valkey")["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert '--requirepass "$(cat /run/secrets/rag-async/valkey_password)"' in command
    assert valkey["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_disruption_budgets_select_the_pods() -> None:
    for name in ("api", "worker"):
        budget = OBJECTS[("PodDisruptionBudget", name)]["spec"]
        labels = OBJECTS[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert OBJECTS[("PodDisruptionBudget", "api")]["spec"]["minAvailable"] >= 1
    assert OBJECTS[("Deployment", "api")]["spec"]["replicas"] >= 2  # so a drain can proceed


def _lane_capacity() -> dict[str, int]:
    return {
        "questions": int(CONFIG["RAG_WORKER_MAX_JOBS"]),
        "documents": int(CONFIG["RAG_WORKER_MAX_DOCUMENTS"]),
    }


def test_keda_scales_workers_on_ready_plus_in_flight() -> None:
    """Each queue's trigger asks for (ready + in flight) / threshold replicas (AverageValue),
    the threshold at most one worker's max jobs for that queue."""
    scaled = OBJECTS[("ScaledObject", "worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker"
    assert ("Deployment", "worker") in OBJECTS
    triggers = {t["name"]: t for t in scaled["triggers"]}
    assert set(triggers) == set(_lane_capacity())
    for lane, capacity in _lane_capacity().items():
        trigger = triggers[lane]
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
        query = trigger["metadata"]["query"]
        promql_parser.parse(query)
        assert query == (
            f'max(rag_queue_depth{{queue="{lane}"}}) + max(rag_jobs_in_flight{{queue="{lane}"}})'
        )
        threshold = float(trigger["metadata"]["threshold"])
        assert 0.5 * capacity <= threshold <= capacity
    assert scaled["minReplicaCount"] >= 1  # a first question never waits for a cold start


def test_keda_does_not_flap() -> None:
    behavior = OBJECTS[("ScaledObject", "worker")]["spec"]["advanced"][
        "horizontalPodAutoscalerConfig"
    ]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 180
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] <= 30


def test_the_metrics_api_overlay_uses_stats() -> None:
    patch = yaml.safe_load((OVERLAYS[0] / "scaledobject-triggers.yaml").read_text())
    triggers = {t["name"]: t for t in patch[0]["value"]}
    prometheus = {t["name"]: t for t in OBJECTS[("ScaledObject", "worker")]["spec"]["triggers"]}
    for lane, trigger in triggers.items():
        metadata = trigger["metadata"]
        assert trigger["type"] == "metrics-api" and metadata["url"].endswith(":8000/stats")
        assert metadata["valueLocation"] == f"queues.{lane}"
        assert metadata["targetValue"] == prometheus[lane]["metadata"]["threshold"]
        host = metadata["url"].split("/")[2].partition(":")[0]
        assert host in CONFIG["RAG_ALLOWED_HOSTS"].split(",")
    auth = _documents(OVERLAYS[0] / "trigger-authentication.yaml")[0]
    _validate(auth)
    assert auth["spec"]["secretTargetRef"][0]["name"] == "rag-async"


async def test_stats_gives_what_the_metrics_api_trigger_reads(
    valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """The valueLocation of each metrics-api trigger is a number in a real GET /stats, read
    with a user key (KEDA's), not an admin's."""
    settings = make_settings(valkey, tmp_path, api_keys="metrics=s3cret-for-the-keda-scaler")
    patch = yaml.safe_load((OVERLAYS[0] / "scaledobject-triggers.yaml").read_text())
    async with running_api(settings) as base_url, httpx.AsyncClient() as client:
        response = await client.get(
            f"{base_url}/stats", headers={"Authorization": "Bearer s3cret-for-the-keda-scaler"}
        )
    assert response.status_code == 200, response.text
    for trigger in patch[0]["value"]:
        value: Any = response.json()
        for part in trigger["metadata"]["valueLocation"].split("."):
            value = value[part]
        assert isinstance(value, int) and value >= 0


def test_prometheus_scrapes_the_pods_with_the_admin_key(tmp_path: Path) -> None:
    """The scrape configs keep the API's and the workers' pods by their labels and ports; the
    API's with the admin key make-secrets.sh makes and config.env names."""
    config = yaml.safe_load(
        (REPO / "deploy" / "monitoring" / "prometheus-kubernetes.yml").read_text()
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, name, port in (
        ("rag-async-api", "api", "http"),
        ("rag-async-worker", "worker", "metrics"),
    ):
        keep = {
            r["source_labels"][0]: r["regex"]
            for r in jobs[job]["relabel_configs"]
            if r.get("action") == "keep"
        }
        labels = OBJECTS[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert (
            keep["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
            == labels["app.kubernetes.io/name"]
        )
        ports = {p["name"] for p in _container("Deployment", name)["ports"]}
        assert keep["__meta_kubernetes_pod_container_port_name"] == port and port in ports
    assert (
        int(CONFIG["RAG_WORKER_METRICS_PORT"]) == 9101
        and CONFIG["RAG_WORKER_METRICS_HOST"] == "0.0.0.0"
    )
    key_file = jobs["rag-async-api"]["authorization"]["credentials_file"]
    subprocess.run(
        ["sh", str(REPO / "deploy" / "compose" / "make-secrets.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    key = (tmp_path / Path(key_file).name).read_text()
    assert (tmp_path / "admin_keys").read_text() == f"prometheus={key}"
    assert CONFIG["RAG_ADMIN_KEYS_FILE"] == "/run/secrets/rag-async/admin_keys"
    settings = Settings(_env_file=None, admin_keys=(tmp_path / "admin_keys").read_text())
    principal = KeyRing.from_settings(settings).identify(key)
    assert principal is not None and principal.admin
