#!/usr/bin/env bash
# Finds or builds the GCP Secret Manager emulator (blackwell-systems/gcp-secret-manager-emulator, gRPC)
# and prints the path of its gRPC binary as the last line. Tried in order, each step logged to stderr:
#   1. installed: $GCP_SM_EMULATOR_BIN, else gcp-secret-manager-emulator on PATH;
#   2. upstream: `go install` of the module at the pinned version, cached under
#      ${MANAGED_SECRETS_SERVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets/servers};
#   3. source: ../shared/servers/gcp-secret-manager-emulator/build.sh (relative to the repo, or to the main
#      checkout of a git worktree; MANAGED_SECRETS_SHARED_SERVERS overrides ../shared/servers) where it exists.
# Exits non-zero, naming each step's failure, when none works.
set -euo pipefail

MODULE="github.com/blackwell-systems/gcp-secret-manager-emulator"
VERSION="${GCP_SM_EMULATOR_VERSION:-v1.1.0}"
# shellcheck source=lib/servers.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/servers.sh"
shared="$shared_root/gcp-secret-manager-emulator"
failures=()

# 1. installed
if [[ -n "${GCP_SM_EMULATOR_BIN:-}" ]]; then
  if [[ -x "$GCP_SM_EMULATOR_BIN" ]]; then
    echo "gcp emulator: installed ($GCP_SM_EMULATOR_BIN from GCP_SM_EMULATOR_BIN)" >&2
    echo "$GCP_SM_EMULATOR_BIN"
    exit 0
  fi
  failures+=("installed: GCP_SM_EMULATOR_BIN=$GCP_SM_EMULATOR_BIN is not an executable")
elif found="$(command -v gcp-secret-manager-emulator)"; then
  echo "gcp emulator: installed ($found on PATH)" >&2
  echo "$found"
  exit 0
else
  failures+=("installed: GCP_SM_EMULATOR_BIN unset and gcp-secret-manager-emulator not on PATH")
fi

# 2. upstream module from the Go module proxy
up="$cache_root/gcp-secret-manager-emulator/go-install-$VERSION"
if [[ -x "$up/bin/server" ]]; then
  echo "gcp emulator: upstream $MODULE@$VERSION already installed ($up)" >&2
  echo "$up/bin/server"
  exit 0
fi
if ! command -v go >/dev/null; then
  failures+=("upstream: go not found on PATH")
elif [[ -e "$up/.failed" && -z "${GCP_SM_EMULATOR_RETRY:-}" ]]; then
  # Tried before on this machine: don't ask the proxy again every run (GCP_SM_EMULATOR_RETRY=1 does).
  failures+=("upstream: go install $MODULE/cmd/server@$VERSION failed before ($(head -c 300 "$up/.failed"))")
else
  mkdir -p "$up"
  if out="$(GOBIN="$up/bin.tmp" GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
      go install "$MODULE/cmd/server@$VERSION" 2>&1)" && [[ -x "$up/bin.tmp/server" ]]; then
    rm -rf "$up/bin" && mv "$up/bin.tmp" "$up/bin"
    echo "gcp emulator: installed upstream $MODULE@$VERSION into $up" >&2
    echo "$up/bin/server"
    exit 0
  fi
  rm -rf "$up/bin.tmp"
  reason="$(printf '%s' "$out" | sed 's/\x1b\[[0-9;]*m//g' | tail -3 | tr '\n' ' ')"
  printf '%s' "$reason" > "$up/.failed"
  failures+=("upstream: go install $MODULE/cmd/server@$VERSION failed: $reason")
fi

# 3. source build from the shared folder
if [[ -f "$shared/build.sh" ]]; then
  if bin="$(bash "$shared/build.sh" | tail -1)" && [[ -x "$bin" ]]; then
    echo "$bin"
    exit 0
  fi
  failures+=("source: $shared/build.sh failed (see its output above)")
else
  failures+=("source: $shared/build.sh not found")
fi

echo "gcp emulator: no way to get it worked:" >&2
printf '  %s\n' "${failures[@]}" >&2
exit 1
