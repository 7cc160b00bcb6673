"""The same manifests outside the cluster: ``managed-secrets exec``, ``render`` and ``sandbox``.

ManagedSecrets and backends are read from files (a GitOps repository), resolved by the operator's own
reconcile core against an in-memory cluster (``cluster.LocalCluster``), with the caller's own store
credentials instead of the backends' ``auth`` blocks (``credentials``), and an optional local overrides file
(``overrides``) that points backends at other endpoints. Nothing here talks to Kubernetes.
"""
