#!/usr/bin/env python3
"""Generate the CRDs from the pydantic models into crds/, charts/managed-secrets/crds/ and
operator/managed_secrets/crds/ (see managed_secrets.crdgen). `--check` only reports stale files.

Run it with the project's environment (it imports every provider's config model): `make crds`.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from managed_secrets.crdgen import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--root", str(ROOT), *sys.argv[1:]]))
