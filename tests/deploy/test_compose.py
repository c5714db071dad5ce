"""deploy/compose.yaml: the Compose specification's schema, and what the demo needs to come up.

No Docker engine runs here, so `docker compose config` and `up` are not run: the schema is the
compose-spec JSON schema that check-jsonschema ships (vendor.compose-spec), checked offline."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.files import COMPOSE, DEPLOY, ROOT, check_process_settings, read_env_file, setting_names, yaml_docs

BCSYNC_ROLES = ("api", "worker", "sandbox")


def services() -> dict[str, dict[str, Any]]:
    return yaml_docs(COMPOSE)[0]["services"]


def role(service: dict[str, Any]) -> str | None:
    command = service.get("command") or []
    return command[0] if command and command[0] in BCSYNC_ROLES else None


def environment(name: str) -> dict[str, str]:
    """What a service's container sees of its env_file and environment (environment wins)."""
    service = services()[name]
    env: dict[str, str] = {}
    for path in service.get("env_file", []):
        env.update(read_env_file(DEPLOY / path))
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def test_compose_spec_schema() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_demo_stack_is_all_there() -> None:
    found = services()
    assert "management" in found["rabbitmq"]["image"], "RabbitMQ with its management UI"
    assert found["postgres"]["image"].startswith("postgres:")
    roles = [role(s) for s in found.values() if "story" not in s.get("profiles", [])]
    assert roles.count("api") == 1 and roles.count("sandbox") == 1
    assert roles.count("worker") >= 2, "two workers"


def test_references_resolve() -> None:
    found = services()
    volumes = set(yaml_docs(COMPOSE)[0].get("volumes") or {})
    for name, service in found.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in found, f"{name} depends on unknown {dependency}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in found, f"{name}: {mode}"
            # Docker refuses to publish ports of a container that joins another's network namespace.
            assert "ports" not in service, f"{name} publishes ports but shares {mode}'s network"
        for path in service.get("env_file", []):
            assert (DEPLOY / path).is_file(), f"{name}: env_file {path}"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: build {build}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in volumes, f"{name}: volume {source} is not declared"


def test_every_bcsync_variable_is_a_real_setting() -> None:
    known = setting_names()
    for name in services():
        unknown = {key for key in environment(name) if key.startswith("BCSYNC_")} - known
        assert not unknown, f"{name} sets variables bcsync does not read: {sorted(unknown)}"


@pytest.mark.parametrize("name", [n for n, s in services().items() if role(s) in ("api", "worker")])
def test_api_and_workers_start_with_their_settings(name: str, clean_env: pytest.MonkeyPatch) -> None:
    check_process_settings(clean_env, environment(name))


def sandbox_flags() -> dict[str, str]:
    command = services()["sandbox"]["command"]
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    return {"--bc-port": "8081", "--dataverse-port": "8082", "--entra-port": "8443", **flags}


@pytest.mark.parametrize("name", [n for n, s in services().items() if role(s) in ("api", "worker")] + ["setup"])
def test_bcsync_containers_reach_and_trust_the_sandbox(name: str) -> None:
    # The sandbox binds 127.0.0.1 and its certificate names 127.0.0.1 only: the others must share its
    # network namespace, use 127.0.0.1 and its ports, and trust the CA file it writes to a shared volume.
    service, env, flags = services()[name], environment(name), sandbox_flags()
    assert service["network_mode"] == "service:sandbox"
    assert env["BCSYNC_AUTHORITY_HOST"] == f"https://127.0.0.1:{flags['--entra-port']}"
    assert urlsplit(env["BCSYNC_BC_URL"]).netloc == f"127.0.0.1:{flags['--bc-port']}"
    assert urlsplit(env["BCSYNC_DATAVERSE_URL"]).netloc == f"127.0.0.1:{flags['--dataverse-port']}"
    ca_file = flags["--ca-file"]
    assert env["REQUESTS_CA_BUNDLE"] == env["SSL_CERT_FILE"] == ca_file
    sandbox_volumes = {v.split(":")[0]: v.split(":")[1] for v in services()["sandbox"]["volumes"]}
    mine = {v.split(":")[0]: v.split(":")[1] for v in service["volumes"]}
    assert any(ca_file.startswith(path + "/") and mine.get(volume) == path for volume, path in sandbox_volumes.items())


def test_webhooks_reach_the_api() -> None:
    env = environment("setup")
    api_port = environment("api").get("BCSYNC_PORT", "8000")
    assert urlsplit(env["BCSYNC_PUBLIC_URL"]).netloc == f"127.0.0.1:{api_port}"
    published = {p.split(":")[-1] for p in services()["sandbox"]["ports"]}
    assert api_port in published, "the api's port is published (on the sandbox, whose network it shares)"


def test_setup_registers_then_seeds() -> None:
    setup = services()["setup"]
    script = " ".join(setup["entrypoint"] + setup["command"])
    assert "bcsync setup &&" in script
    python = shlex.split(setup["command"][0])[-1]
    compile(python, "setup seed", "exec")  # the inline seeding script is valid Python
    flags, api_port = sandbox_flags(), environment("api").get("BCSYNC_PORT", "8000")
    ports = set(re.findall(r"127\.0\.0\.1:(\d+)", python))
    assert ports == {flags["--bc-port"], flags["--dataverse-port"], api_port}, "seeds both stand-ins, then the api"
    assert setup["depends_on"]["api"]["condition"] == "service_healthy"


def test_roles_off_the_api_port_check_their_own_health() -> None:
    """The image's HEALTHCHECK asks the api port; a worker asks its own port's /healthz, the sandbox its own."""
    for name, service in services().items():
        check = " ".join(service.get("healthcheck", {}).get("test", []))
        if role(service) == "worker":
            port = environment(name)["BCSYNC_WORKER_METRICS_PORT"]
            assert f"127.0.0.1:{port}/healthz" in check, name
        if role(service) == "sandbox":
            assert check and "healthz" not in check, name


def test_root_of_build_is_the_project() -> None:
    assert (DEPLOY / services()["api"]["build"]["context"]).resolve() == ROOT
