#!/usr/bin/env bash
# Regenerate requirements.lock from pyproject.toml (dependencies and the dev extra), pinned to the versions
# installed in .venv now (so the lock records what was tested), with hashes. Run after changing pyproject's
# dependencies and installing them: `pip install -e '.[dev]'`, then `bash scripts/lock.sh`.
# It also rewrites requirements-runtime.lock and requirements-build.lock (scripts/lock-runtime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
constraints=$(mktemp --suffix=.txt)
trap 'rm -f "$constraints"' EXIT
"$BIN/pip" list --format=freeze --exclude-editable > "$constraints"  # name==version, also for local wheels
"$BIN/pip-compile" --quiet --extra dev --generate-hashes --strip-extras --allow-unsafe --no-annotate \
  --no-emit-index-url --no-emit-find-links --constraint "$constraints" --output-file requirements.lock pyproject.toml
# The header names the temporary constraints file; say how to regenerate instead.
sed -i "s|^#    pip-compile .*|#    bash scripts/lock.sh   (pip-compile of pyproject.toml + the dev extra, pinned to .venv)|" requirements.lock
echo "requirements.lock: $(grep -c '==' requirements.lock) pinned packages"
# The image's locks (runtime only, and the build backend) at the same versions: the Dockerfile installs them.
bash scripts/lock-runtime.sh
