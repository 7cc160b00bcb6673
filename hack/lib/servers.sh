# Sourced by hack/build-gcp-emulator.sh and hack/build-lowkey-vault.sh: where the repo, the servers' cache
# and the shared source folder are. Sets repo, cache_root, shared_root.
repo="$(cd "$(dirname "${BASH_SOURCE[1]}")/.." && pwd)"
cache_root="${MANAGED_SECRETS_SERVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets/servers}"
# shared/ lies beside the repo; in a git worktree, beside the main checkout; in a clone of a local
# checkout (a CI clone in a temporary folder), beside the checkout it was cloned from.
shared_root="${MANAGED_SECRETS_SHARED_SERVERS:-$repo/../shared/servers}"
if [[ -z "${MANAGED_SECRETS_SHARED_SERVERS:-}" && ! -d "$shared_root" ]]; then
  for checkout in \
    "$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null | xargs -r dirname)" \
    "$(git -C "$repo" remote get-url origin 2>/dev/null)"; do
    if [[ "$checkout" == /* && -d "$checkout/../shared/servers" ]]; then
      shared_root="$(cd "$checkout/../shared/servers" && pwd)"
      break
    fi
  done
fi
