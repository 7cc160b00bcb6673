"""The SecretBackend and ManagedSecret specs the cloud stores' control-plane tests apply, shared with the
`managed-secrets exec` tests so that both prove the very same manifests."""

from __future__ import annotations

from typing import Any

from harness.gcp_emulator import GcpSecretManagerEmulator
from harness.lowkey import API_VERSION, CHALLENGE_TENANT, KeyVaultServer

#: The SecretBackend's name.
BACKEND = "store"
#: The Secret the backends read their credentials from (exec ignores it: it uses the caller's own).
CREDENTIALS_SECRET = "store-creds"
#: The properties every stored value has; each becomes a Secret key of the same name.
PROPERTIES = ("user", "pass")


def gcp_backend_spec(emulator: GcpSecretManagerEmulator, credentials_key: str) -> dict[str, Any]:
    return {
        "gcp": {
            "projectID": emulator.project,
            "endpoint": emulator.endpoint,
            "auth": {"secretRef": {"secretAccessKey": {"name": CREDENTIALS_SECRET, "key": credentials_key}}},
        }
    }


def azure_backend_spec(keyvault: KeyVaultServer, credentials_key: str) -> dict[str, Any]:
    return {
        "azure": {
            "vaultURL": keyvault.vault_url,
            "tenantID": keyvault.tenant_id,
            "authSecretRef": {
                "clientID": {"name": CREDENTIALS_SECRET, "key": "client-id"},
                "clientSecret": {"name": CREDENTIALS_SECRET, "key": credentials_key},
            },
        }
    }


def azure_provider_options(keyvault: KeyVaultServer) -> dict[str, Any]:
    """The test vault's connection options: of the operator process (or exec's overrides), not the CRD."""
    return {
        "azure_connection_verify": str(keyvault.ca_path),
        "azure_verify_challenge_resource": False,  # the vault is 127.0.0.1, not *.vault.azure.net
        "azure_authority_host": keyvault.authority,
        "azure_api_version": API_VERSION,
        "azure_additionally_allowed_tenants": [CHALLENGE_TENANT],
    }


def store_data(key: str, version: str | None = None) -> list[dict[str, Any]]:
    """``data`` of a ManagedSecret taking each of PROPERTIES of remote ``key``."""
    pinned = {"version": version} if version else {}
    return [{"secretKey": p, "remoteRef": {"key": key, "property": p, **pinned}} for p in PROPERTIES]


def store_spec(key: str, version: str | None = None) -> dict[str, Any]:
    """A ManagedSecret spec reading ``key`` (at ``version``) from BACKEND."""
    return {"backendRef": {"name": BACKEND}, "refreshInterval": "1h", "data": store_data(key, version)}
