"""What goes into the image: a base image pinned by digest, only hash-checked packages (the runtime lock at
requirements.lock's versions, without the dev tools; the build backend from its own lock), and no sandbox in
the production image (the default target) while `--target demo` has it; compose builds the demo target only
for the sandbox and the story. No Docker engine runs here: these checks read the files, and run the CLI the
way the production image has it (without the `sandbox` package)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.deploy.files import COMPOSE, DOCKERFILE, ROOT, yaml_docs
from tests.deploy.test_dockerfile import final_stage, instructions, stages

DIGEST = re.compile(r"^python:3\.11-slim@sha256:[0-9a-f]{64}$")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"


def parsed() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def chain(target: str) -> list[tuple[str, str]]:
    """A target's instructions after those of the stages it is built FROM."""
    by_name = {name: (base, body) for name, base, body in stages(parsed()) if name}
    base, body = by_name[target]
    while base in by_name:
        base, more = by_name[base]
        body = more + body
    return body


def locked(path) -> dict[str, tuple[Version, frozenset[str]]]:
    """name -> (version, hashes)."""
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        match = PIN.match(block)
        if match:
            hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
            pins[canonicalize_name(match.group(1))] = (Version(match.group(2)), hashes)
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- the base image --------------------------------------------------------------------------------------------


def test_every_base_image_is_python_3_11_slim_pinned_by_one_digest() -> None:
    names = {name for name, _, _ in stages(parsed()) if name}
    external = {base for _, base, _ in stages(parsed()) if base not in names}
    assert external and all(DIGEST.fullmatch(base) for base in external), external
    assert len(external) == 1, f"one digest for every stage: {external}"


# ---- pip: hashes only ------------------------------------------------------------------------------------------


def pip_installs() -> list[str]:
    commands = []
    for word, rest in parsed():
        if word == "RUN":
            commands += [c.strip() for c in re.split(r"&&|;", rest) if re.search(r"\bpip\s+install\b", c)]
    return commands


def test_every_pip_install_checks_hashes_or_installs_our_own_wheel_alone() -> None:
    commands = pip_installs()
    assert commands
    for command in commands:
        if " -r " in f" {command} ":
            assert "--require-hashes" in command, command
            lock = command.split(" -r ", 1)[1].split()[0]
            assert lock in ("requirements-runtime.lock", "requirements-build.lock"), command
        else:  # the wheel built from this source, its dependencies already installed from the lock
            assert "--no-deps" in command and re.search(r"/wheels/bcsync-\*\.whl", command), command
        assert " -c " not in command and "--constraint" not in command, command
    assert any("requirements-runtime.lock" in c for c in commands)
    builds = [rest for word, rest in parsed() if word == "RUN" and "pip wheel" in rest]
    assert builds and all("--no-build-isolation" in b and "--no-deps" in b for b in builds), \
        "build isolation would fetch an unpinned setuptools"


def test_the_runtime_lock_is_requirements_lock_without_the_dev_tools() -> None:
    runtime, full = locked(RUNTIME_LOCK), locked(ROOT / "requirements.lock")
    assert len(runtime) > 20
    for name, (version, hashes) in runtime.items():
        assert hashes, f"{name} has no hash"
        assert name in full and full[name] == (version, hashes), \
            f"{name}=={version} differs from requirements.lock: run `bash scripts/lock-runtime.sh`"
    for requirement in map(Requirement, project()["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in runtime and requirement.specifier.contains(runtime[name][0], prereleases=True), requirement
    # The dev extra's tools (pyyaml is in it too, but uvicorn[standard] needs it at run time).
    dev = {canonicalize_name(Requirement(r).name) for r in project()["project"]["optional-dependencies"]["dev"]}
    tools = dev - {"pyyaml"}
    assert {"pytest", "ruff", "mypy", "pip-tools"} <= tools
    assert not tools & set(runtime), f"dev tools in the image: {sorted(tools & set(runtime))}"


def test_the_build_lock_pins_the_build_backend_with_hashes() -> None:
    build, full = locked(BUILD_LOCK), locked(ROOT / "requirements.lock")
    assert build and all(hashes for _, hashes in build.values())
    for requirement in map(Requirement, project()["build-system"]["requires"]):
        name = canonicalize_name(requirement.name)
        assert name in build and requirement.specifier.contains(build[name][0]), requirement
    for name, pin in build.items():  # the same versions as the dev lock, but for its too old setuptools
        if name != "setuptools" and name in full:
            assert pin == full[name], name


# ---- the sandbox: in the demo target only ----------------------------------------------------------------------


def copies_sandbox(body: list[tuple[str, str]]) -> bool:
    return any(word in ("COPY", "ADD") and re.search(r"(^|\s)\.?/?sandbox/?(\s|$)", rest) for word, rest in body)


def venv_source(body: list[tuple[str, str]]) -> str:
    [source] = [rest.split()[0].removeprefix("--from=") for word, rest in body
                if word == "COPY" and rest.startswith("--from=") and "/opt/bcsync" in rest]
    return source


def test_the_production_image_has_no_sandbox_and_the_demo_target_has_it() -> None:
    production = final_stage(parsed())
    assert not copies_sandbox(production)
    assert not copies_sandbox(chain(venv_source(production))), "the production venv is built with the sandbox"
    demo = chain("demo")
    assert copies_sandbox(chain(venv_source(demo))), "the demo target's venv has no sandbox"
    assert dict(demo)["USER"] == dict(production)["USER"] and dict(demo)["ENTRYPOINT"] == dict(production)["ENTRYPOINT"]
    assert stages(parsed())[-1][0] != "demo", "the default target must be the production image"


def test_compose_builds_the_demo_target_for_the_sandbox_and_the_story_only() -> None:
    [compose] = yaml_docs(COMPOSE)
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        command = service.get("command") or ["api"]
        target = service["build"].get("target")
        needs_sandbox = command[0] in ("sandbox", "demo")
        assert (target == "demo") == needs_sandbox, (name, target, command)
        assert service["image"] == ("bcsync:demo" if needs_sandbox else "bcsync:local"), name


# ---- the CLI as the production image has it -------------------------------------------------------------------

WITHOUT_SANDBOX = "import sys; sys.modules['sandbox'] = None  # as if the package were not installed\n"


def run_without_sandbox(code: str, *args: str, tmp_path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "BCSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bcsync.db"}
    return subprocess.run([sys.executable, "-c", WITHOUT_SANDBOX + code, *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)


def test_the_roles_start_without_the_sandbox_package(tmp_path) -> None:
    imports = run_without_sandbox(
        "import service.cli, service.app, service.runners, service.setup, consumers.run, consumers.assembly\n"
        "print(sorted(m for m, module in sys.modules.items() if module and m.split('.')[0] == 'sandbox'))",
        tmp_path=tmp_path)
    assert imports.returncode == 0 and imports.stdout.strip() == "[]", imports.stderr
    cli = "from service.cli import app; sys.argv[0] = 'bcsync'; app()"
    assert run_without_sandbox(cli, "--help", tmp_path=tmp_path).returncode == 0
    migrate = run_without_sandbox(cli, "migrate", tmp_path=tmp_path)
    assert migrate.returncode == 0 and "up to date" in migrate.stdout, migrate.stderr


@pytest.mark.parametrize("command", [["sandbox"], ["demo", "--once"]])
def test_sandbox_and_demo_say_that_this_image_has_no_sandbox(tmp_path, command: list[str]) -> None:
    run = run_without_sandbox("from service.cli import app; sys.argv[0] = 'bcsync'; app()", *command,
                              tmp_path=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "has no sandbox" in run.stderr and "--target demo" in run.stderr and "Traceback" not in run.stderr
