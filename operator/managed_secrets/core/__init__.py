"""The level-based reconcile core: fetch, render, compare, write only on difference.

Imports neither Kopf nor an SDK nor the Kubernetes client (enforced by import-linter); it talks to the
cluster through the ports in ``ports`` and to stores through ``providers.base``.
"""
