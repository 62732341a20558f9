#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a PostgreSQL server (Debian's package)
# for the ledger's multi-replica tests. Installs only what is missing; needs root (or sudo).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
echo "installing PostgreSQL from Debian packages for the ledger tests" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
