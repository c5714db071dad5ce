#!/usr/bin/env bash
# Install Debian's Chromium and its ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver) for the browser tests
# (tests/browser) when either is missing and we are root. Never fails the build itself: without them (not root,
# or the install failed) it says so and exits 0; the browser tests then skip, or fail under CI /
# BCSYNC_REQUIRE_BROWSER=1 (tests/browser/conftest.py), so CI cannot pass without running them.
# A fresh install is about 120 MB of packages (chromium, chromium-common, chromium-driver and their libraries).
set -uo pipefail

PACKAGES=(chromium chromium-driver)

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-browser: /usr/bin/chromium or /usr/bin/chromedriver is missing and this is not root;" \
       "install them with: sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-browser: no apt-get here; install Chromium and ChromeDriver by hand (the browser tests need" \
       "/usr/bin/chromium and /usr/bin/chromedriver)" >&2
  exit 0
fi

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

echo "ensure-browser: installing ${PACKAGES[*]} with apt-get"
start=$(date +%s)
if ! install; then
  # Most often the package lists are missing or stale (a fresh image has none): fetch them and try again.
  echo "ensure-browser: install failed; running apt-get update and trying again"
  apt-get update -q && install
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "ensure-browser: $(/usr/bin/chromium --version 2>/dev/null), $(/usr/bin/chromedriver --version 2>/dev/null |
    cut -d' ' -f1-2) installed in $(($(date +%s) - start)) s"
else
  echo "ensure-browser: could not install ${PACKAGES[*]}; the browser tests will skip (or fail under CI)" >&2
fi
exit 0
