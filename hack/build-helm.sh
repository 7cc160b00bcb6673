#!/usr/bin/env bash
# Builds the helm binary the chart tests run, from its Go module, once, into a cache outside the work tree
# keyed by version (like build-testbins.sh does for the control plane). Later runs (and CI on the same
# machine) reuse it. Prints the path of the helm binary on stdout; build output goes to stderr.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${MANAGED_SECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets}"
DIR="$CACHE/testbin/helm-$HELM_VERSION"

if [[ -x "$DIR/helm" ]]; then
  echo "$DIR/helm"
  exit 0
fi
mkdir -p "$DIR"
major="${HELM_VERSION%%.*}"  # v3 or v4: the module path carries the major version
tmp="$(mktemp -d "$DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# helm's go.mod has no replace directives, so `go install module@version` builds it as published. The
# ldflags are those of helm's own Makefile: its version, and the Kubernetes version of its client-go as the
# default .Capabilities.KubeVersion of `helm template` and `helm lint` (else it says v1.20).
gomod=$(go mod download -json "helm.sh/helm/$major@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)
ldflags="-s -w -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X helm.sh/helm/$major/$pkg.k8sVersionMajor=1 -X helm.sh/helm/$major/$pkg.k8sVersionMinor=$client_go"
done
GOFLAGS="-buildvcs=false" CGO_ENABLED=0 GOBIN="$tmp" \
  go install -trimpath -ldflags "$ldflags" "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" >&2
mv "$tmp/helm" "$DIR/helm"
echo "$DIR/helm"
