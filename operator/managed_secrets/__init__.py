"""managed-secrets: a Kubernetes operator that syncs native Secrets from secret stores."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The one version: pyproject.toml's, as installed (the chart's version and appVersion follow it).
    __version__ = version("managed-secrets")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
