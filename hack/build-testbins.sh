#!/usr/bin/env bash
# Builds the real control-plane binaries the tests run (kube-apiserver, kube-controller-manager, etcd)
# from Go modules, once, into a cache outside the work tree keyed by version. Later runs (and CI on the
# same machine) reuse it. Prints the bin folder on stdout.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${MANAGED_SECRETS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/managed-secrets}"
BIN="$CACHE/testbin/kube-$KUBE_VERSION-etcd-$ETCD_VERSION"

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/etcd" ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$BIN"
# One build at a time on this machine (tests, make and CI may start it concurrently); a second caller
# waits, then finds the binaries built.
exec 9>"$CACHE/.build-testbins.lock"
flock 9
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/etcd" ]]; then
  echo "$BIN"
  exit 0
fi
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0

# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local folders, so
# `go install` cannot build it; a wrapper module replaces each with the matching published version.
kube_mod="$CACHE/gomod/kube-$KUBE_VERSION"
if [[ ! -f "$kube_mod/.ready" ]]; then
  rm -rf "$kube_mod" && mkdir -p "$kube_mod"
  (
    cd "$kube_mod"
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    staging_version="v0.${KUBE_VERSION#v1.}"
    {
      echo "module managedsecrets.io/testbin/kube"
      echo "go 1.26"
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' "$gomod"
    } > go.mod
    go get "k8s.io/kubernetes@$KUBE_VERSION" >&2
    touch .ready
  )
fi
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
for cmd in kube-apiserver kube-controller-manager; do
  [[ -x "$BIN/$cmd" ]] || (cd "$kube_mod" && go build -ldflags "$ldflags" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2 && mv "$BIN/$cmd.tmp" "$BIN/$cmd")
done

etcd_mod="$CACHE/gomod/etcd-$ETCD_VERSION"
if [[ ! -x "$BIN/etcd" ]]; then
  mkdir -p "$etcd_mod"
  (
    cd "$etcd_mod"
    printf 'module managedsecrets.io/testbin/etcd\ngo 1.26\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > go.mod
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go build -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3 >&2 && mv "$BIN/etcd.tmp" "$BIN/etcd"
  )
fi
echo "$BIN"
