"""Test kit for the operator and for provider authors: an in-memory provider, a fake cluster, and the
provider contract suite.

Nothing in the operator imports this package (an import-linter contract says so), and only
``managed_secrets.testing.contract`` needs pytest (``pip install 'managed-secrets[testing]'``), so this
module imports neither.
"""

from __future__ import annotations

from managed_secrets.providers.memory import MemoryProvider, MemoryStore, drop_store, memory_store
from managed_secrets.testing.fakes import Event, FakeCluster, FakeWorkloads, Restart, Write, provider_context

__all__ = [
    "Event",
    "FakeCluster",
    "FakeWorkloads",
    "MemoryProvider",
    "MemoryStore",
    "Restart",
    "Write",
    "drop_store",
    "memory_store",
    "provider_context",
]
