#!/usr/bin/env bash
# Installs what tests/test_browser.py needs: Debian chromium + chromium-driver (apt) and selenium (pip).
# Idempotent and quiet: does nothing when everything is already there. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if ! python -c "import selenium" >/dev/null 2>&1; then
    python -m pip install -q -c constraints.txt "selenium>=4.10"
fi

chromium --version >/dev/null 2>&1 || { echo "install-browser: chromium is not runnable" >&2; exit 1; }
chromedriver --version >/dev/null 2>&1 || { echo "install-browser: chromedriver is not runnable" >&2; exit 1; }
