#!/usr/bin/env bash
# Regenerate the image's hashed locks from pyproject.toml, at exactly the versions of requirements.lock (what
# `make install` installs and the suite tested), with the same tool (pip-compile):
#   requirements-runtime.lock  the runtime dependencies only: no dev extra (pytest, ruff, mypy, ...)
#   requirements-build.lock    the build backend (pyproject's build-system.requires): setuptools, wheel
# The Dockerfile installs both with `pip install --require-hashes`. scripts/lock.sh runs this after it has
# written requirements.lock; run it alone when only these two are missing or stale: `bash scripts/lock-runtime.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
constraints=$(mktemp --suffix=.txt)
trap 'rm -f "$constraints"' EXIT
# requirements.lock's pins without their hashes (pip refuses hashes in a constraints file).
sed -e '/^ *#/d' -e '/--hash=/d' -e 's/ *\\$//' -e '/^ *$/d' requirements.lock > "$constraints"
common=(--quiet --generate-hashes --strip-extras --allow-unsafe --no-annotate --no-emit-index-url --no-emit-find-links)
"$BIN/pip-compile" "${common[@]}" --constraint "$constraints" --output-file requirements-runtime.lock pyproject.toml
# The dev lock's setuptools is pip-tools' own (65.5): too old to build this pyproject (a PEP 639 license string
# needs setuptools 77+), so the build backend's setuptools is the newest allowed; wheel & co. as in the lock.
sed -i '/^setuptools==/d' "$constraints"
"$BIN/pip-compile" "${common[@]}" --all-build-deps --only-build-deps --constraint "$constraints" \
  --output-file requirements-build.lock pyproject.toml
# The headers name the temporary constraints file; say how to regenerate instead.
sed -i "s|^#    pip-compile .*|#    bash scripts/lock-runtime.sh   (pip-compile of pyproject.toml at requirements.lock's versions)|" \
  requirements-runtime.lock requirements-build.lock
echo "requirements-runtime.lock: $(grep -c '==' requirements-runtime.lock) pinned packages;" \
  "requirements-build.lock: $(grep -c '==' requirements-build.lock)"
