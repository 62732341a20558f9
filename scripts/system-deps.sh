#!/usr/bin/env bash
# System packages the test suite needs beyond Python, from Debian: a PostgreSQL server for the
# ledger's multi-replica tests, and Chromium for the console's browser test (Playwright drives
# it by executable path: no browser download). Installs only what is missing; needs root (or
# sudo).
set -euo pipefail
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
if ! command -v chromium >/dev/null 2>&1; then missing+=(chromium); fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} from Debian packages for the tests" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
