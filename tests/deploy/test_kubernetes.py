"""deploy/k8s: every manifest against the Kubernetes JSON schemas (kubernetes-validate, offline), the
custom resources against crd_schemas.py, and the references between the files and to the service.

No cluster runs here: nothing is applied, and admission (KEDA's, the operators') is not exercised."""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from schemas.mappings import MAPPINGS
from service.settings import Settings
from service.topology import Topology
from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.files import K8S, check_process_settings, setting_names, yaml_docs

# The oldest Kubernetes minor still commonly run, and the newest the package carries.
VERSIONS = ("1.29", kubernetes_validate.latest_version())
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
SERVICE_PROTECTION_LIMIT = 6000  # requests per 5 minutes, per system (contract: the Microsoft side)


@cache
def documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml_docs(path)]


def find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    # Copies: a test must not change what the next one reads.
    return [copy.deepcopy(d) for _, d in documents()
            if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = find(kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def deployment(component: str) -> dict[str, Any]:
    return one("Deployment", f"bcsync-{component}")


def container(component: str) -> dict[str, Any]:
    return deployment(component)["spec"]["template"]["spec"]["containers"][0]


def env_of(component: str) -> dict[str, str]:
    """The variables a container gets: envFrom ConfigMaps, then env (values or Secret keys)."""
    spec, env = container(component), {}
    for source in spec.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = one("Secret", ref["name"])["stringData"][ref["key"]]
    return env


def config() -> dict[str, str]:
    return one("ConfigMap", "bcsync-config")["data"]


@pytest.mark.parametrize(("path", "doc"), [pytest.param(p, d, id=f"{p.name}:{d['kind']}/{d['metadata']['name']}")
                                           for p, d in documents()])
def test_manifest_matches_its_schema(path: Path, doc: dict[str, Any]) -> None:
    schema = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, schema)
        return
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields fail
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} against Kubernetes {version}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{path.name}: no schema for {doc['apiVersion']} {doc['kind']} (add one to crd_schemas.py)")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml_docs(K8S / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    images = {image["name"] for image in kustomization["images"]}
    assert {container(c)["image"].split(":")[0] for c in ("api", "worker")} <= images


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"]["labels"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_deployments_select_their_own_pods() -> None:
    for doc in find("Deployment"):
        assert matches(doc["spec"]["selector"]["matchLabels"], pod_labels(doc)), doc["metadata"]["name"]


@pytest.mark.parametrize(("kind", "component", "selector"), [
    ("Service", "api", lambda d: d["spec"]["selector"]),
    ("PodDisruptionBudget", "api", lambda d: d["spec"]["selector"]["matchLabels"]),
    ("PodDisruptionBudget", "worker", lambda d: d["spec"]["selector"]["matchLabels"]),
    ("PodMonitor", "api", lambda d: d["spec"]["selector"]["matchLabels"]),
    ("PodMonitor", "worker", lambda d: d["spec"]["selector"]["matchLabels"]),
])
def test_selectors_pick_exactly_one_deployment(kind: str, component: str, selector: Any) -> None:
    chosen = [d["metadata"]["name"] for d in find("Deployment")
              if matches(selector(one(kind, f"bcsync-{component}")), pod_labels(d))]
    assert chosen == [f"bcsync-{component}"]


@pytest.mark.parametrize("component", ["api", "worker"])
def test_secure_pods(component: str) -> None:
    pod = deployment(component)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container(component)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources = container(component)["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]


def test_read_only_root_needs_a_server_database() -> None:
    # The default database is a SQLite file in the working directory, which a read-only root cannot hold.
    assert env_of("api")["BCSYNC_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_api_deployment_probes_and_replicas() -> None:
    api, port = container("api"), int(config()["BCSYNC_PORT"])
    assert deployment("api")["spec"]["replicas"] == 2
    assert [p["containerPort"] for p in api["ports"] if p["name"] == "http"] == [port]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {api[p]["httpGet"]["port"] for p in ("livenessProbe", "readinessProbe", "startupProbe")} == {"http"}
    assert api["args"] == ["api"]


def test_worker_deployment() -> None:
    worker = container("worker")
    assert worker["args"] == ["worker"]
    assert [p["containerPort"] for p in worker["ports"]] == [int(config()["BCSYNC_WORKER_METRICS_PORT"])]
    assert "replicas" not in deployment("worker")["spec"], "KEDA owns the worker count"
    assert worker["livenessProbe"]["httpGet"]["path"] == worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {worker[p]["httpGet"]["port"] for p in ("livenessProbe", "readinessProbe", "startupProbe")} == {
        worker["ports"][0]["name"]}


def test_every_referenced_secret_key_and_configmap_exists() -> None:
    for component in ("api", "worker"):
        env_of(component)  # raises KeyError / fails on a missing ConfigMap, Secret or key
    for auth in find("TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in one("Secret", ref["name"])["stringData"]


def test_settings_are_real_and_secrets_stay_out_of_the_configmap() -> None:
    known = setting_names()
    for name, source in (("ConfigMap", config()), ("Secret", one("Secret", "bcsync-secrets")["stringData"])):
        unknown = {k for k in source if k.startswith("BCSYNC_")} - known
        assert not unknown, f"{name} sets variables bcsync does not read: {sorted(unknown)}"
    secret_fields = {f"BCSYNC_{n.upper()}" for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    secret_fields |= {"BCSYNC_DATABASE_URL", "BCSYNC_BROKER_URL"}  # they carry passwords
    assert not secret_fields & config().keys()


@pytest.mark.parametrize("component", ["api", "worker"])
def test_processes_start_with_these_settings(component: str, clean_env: pytest.MonkeyPatch) -> None:
    check_process_settings(clean_env, env_of(component))


def test_scaled_object_targets_the_worker() -> None:
    scaled = one("ScaledObject", "bcsync-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment("worker")["metadata"]["name"]
    assert scaled["minReplicaCount"] >= 2
    for trigger in scaled["triggers"]:
        one("TriggerAuthentication", trigger["authenticationRef"]["name"])


def test_queue_pattern_matches_the_mapping_queues_only() -> None:
    topology = Topology(config()["BCSYNC_NAMESPACE"])
    for trigger in one("ScaledObject", "bcsync-worker")["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert metadata["useRegex"] == "true" and metadata["protocol"] == "http", "regex needs the management API"
        pattern = re.compile(metadata["queueName"])
        for mapping in MAPPINGS:
            assert pattern.search(topology.mapping_queue(mapping.name)), mapping.name
        waiting = [topology.delay_queue(s) for s in Topology("x").retry_delays] + [topology.dead_queue]
        assert not [q for q in waiting if pattern.search(q)], "retries and dead letters are no work for new workers"
        assert not pattern.search(Topology("other").mapping_queue(MAPPINGS[0].name)), "another installation's"


def test_request_budgets_stay_under_the_service_protection_limit() -> None:
    # The workers share one budget (consumers/peers.py); the api replicas' own requests need some room left.
    for key in ("BCSYNC_BC_REQUEST_BUDGET", "BCSYNC_DATAVERSE_REQUEST_BUDGET"):
        assert int(config()[key]) <= 0.9 * SERVICE_PROTECTION_LIMIT, key


def test_ingress_publishes_only_the_webhooks_and_the_console() -> None:
    ingress = one("Ingress", "bcsync-webhooks")["spec"]
    paths = [p for rule in ingress["rules"] for p in rule["http"]["paths"]]
    # The console signs its users in with Entra (its own session, roles, CSRF); admin, metrics and docs stay inside.
    assert [p["path"] for p in paths] == ["/webhooks", "/console"], "admin, metrics and docs stay inside the cluster"
    for path in paths:
        service = one("Service", path["backend"]["service"]["name"])
        assert path["backend"]["service"]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    hosts = {h for t in ingress["tls"] for h in t["hosts"]}
    assert "https://" + ingress["rules"][0]["host"] == config()["BCSYNC_PUBLIC_URL"].rstrip("/")
    assert ingress["rules"][0]["host"] in hosts


def test_secret_is_a_marked_template() -> None:
    for key, value in one("Secret", "bcsync-secrets")["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} holds something other than a placeholder"
