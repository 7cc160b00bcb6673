#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries are here, for the dynamic-secrets tests (tests/harness/postgres.py
# starts its own server on 127.0.0.1 with a temporary data directory; nothing of the package's own cluster
# is used). Installs Debian's `postgresql` when missing and we are root; otherwise says so and leaves it:
# the tests that need it skip with that reason.
set -euo pipefail

found() {
  command -v postgres >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
}

if found; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-postgres: no PostgreSQL and no way to install it (needs root and apt-get); its tests skip" >&2
  exit 0
fi
echo "install-postgres: installing Debian's postgresql" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# The package's own cluster is not wanted: the harness runs a private server per test session.
apt-get install -y -qq --no-install-recommends postgresql >&2
found
