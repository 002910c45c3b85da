#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only when they are missing.
#
# Why a script and not a pip extra: the report test renders report.html in a real headless
# browser, and the dashboard test runs a real Prometheus; both come from Debian, not PyPI.
# Idempotent: when every package is already installed it returns in well under a second
# without touching the network.
#
# Usage: scripts/install-test-deps.sh        (as root, or with sudo available)
# Others add packages by appending to PACKAGES (name of the dpkg package) below.
set -euo pipefail

PACKAGES=(
    chromium       # headless rendering of report.html (tests/tracer/test_report.py)
    fonts-dejavu-core  # a sans-serif font so screenshots show text, not boxes
    prometheus     # a real Prometheus (and promtool) scraping spectrace (tests/test_dashboards.py)
    libpython3.11  # the rotel-agent collector binary from the rotel wheel links libpython3.11.so
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-deps: all present (${PACKAGES[*]})"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
