"""Prometheus metrics. Labels carry reasons, kinds and backend types, and (the expiry gauge only) the
ManagedSecret's namespace and name; never names of keys, never values."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SYNCS = Counter(
    "managedsecrets_syncs_total",
    "Reconciles of ManagedSecrets by result and reason.",
    ["result", "reason"],
    registry=REGISTRY,
)
SYNC_SECONDS = Histogram(
    "managedsecrets_sync_duration_seconds",
    "Time of one reconcile, fetch to write.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PROVIDER_CALLS = Counter(
    "managedsecrets_provider_calls_total",
    "Calls to secret stores by backend type and operation.",
    ["backend", "operation"],
    registry=REGISTRY,
)
PROVIDER_KEYS = Counter(
    "managedsecrets_provider_keys_fetched_total",
    "Remote keys read from secret stores by backend type.",
    ["backend"],
    registry=REGISTRY,
)
SECRET_WRITES = Counter(
    "managedsecrets_secret_writes_total",
    "Writes to target Secrets by action.",
    ["action"],
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "managedsecrets_status_writes_total",
    "Status patches of ManagedSecrets.",
    registry=REGISTRY,
)
RESTARTS = Counter(
    "managedsecrets_workload_restarts_total",
    "Rolling restarts triggered, by workload kind and result.",
    ["kind", "result"],
    registry=REGISTRY,
)
MANAGED = Gauge(
    "managedsecrets_managed_objects",
    "ManagedSecrets known to the operator by Ready condition.",
    ["ready"],
    registry=REGISTRY,
)
LEASE_OPERATIONS = Counter(
    "managedsecrets_lease_operations_total",
    "Lease operations on dynamic secrets engines by operation (issue, renew, revoke) and result (ok, error).",
    ["operation", "result"],
    registry=REGISTRY,
)
EXPIRES = Gauge(
    "managedsecrets_secret_expiry_timestamp_seconds",
    "When what the Secret of a ManagedSecret holds expires (epoch seconds): a certificate's notAfter, a"
    " lease's expiry, the earliest expiry the stores give its values. Absent where none is known.",
    ["namespace", "name"],
    registry=REGISTRY,
)
DRIFT_EVENTS = Counter(
    "managedsecrets_drift_events_total",
    "Changes to managed Secrets the operator did not make (seen by its Secret watch), by kind of change.",
    ["change"],
    registry=REGISTRY,
)
DRIFT_REPAIRS = Counter(
    "managedsecrets_drift_repairs_total",
    "Reconciles run because a managed Secret drifted, by result: repaired (written back), in_sync "
    "(nothing to repair), failed; and delayed (a repair postponed by the per-object rate limit).",
    ["result"],
    registry=REGISTRY,
)
