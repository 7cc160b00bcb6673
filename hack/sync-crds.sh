#!/usr/bin/env bash
# crds/ is the source of the CustomResourceDefinitions. The Helm chart (charts/managed-secrets/crds/) and
# the Python package (operator/managed_secrets/crds/, for `managed-secrets check`) ship identical copies;
# tests/test_chart.py fails when they drift. Run this after editing crds/.
set -euo pipefail
cd "$(dirname "$0")/.."
for dest in charts/managed-secrets/crds operator/managed_secrets/crds; do
  mkdir -p "$dest"
  rm -f "$dest"/*.yaml
  cp crds/*.yaml "$dest"/
done
echo "copied $(ls crds/*.yaml | wc -l) CRDs to charts/managed-secrets/crds and operator/managed_secrets/crds"
