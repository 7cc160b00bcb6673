"""Azure Key Vault against the real lowkey-vault (harness/lowkey.py), through the real azure-keyvault-secrets
and azure-identity stacks, plus Azure-only cases: every auth type, name rules, disabled versions, TLS
verification.

lowkey-vault accepts any bearer token: refused credentials are proven at the Entra ID authority stub
(harness.lowkey.EntraAuthority, which checks client secrets and federated assertions). It answers 404 for
a disabled version: Key Vault's 403 is proven by a narrow fake (test_secret_disabled_403_is_version_not_found).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.lowkey import (
    API_VERSION,
    CHALLENGE_TENANT,
    KeyVaultRemote,
    KeyVaultServer,
    StaticTokenCredential,
)
from managed_secrets.errors import (
    AuthFailed,
    BackendUnavailable,
    InvalidBackend,
    InvalidSpec,
    RemoteKeyNotFound,
    VersionNotFound,
)
from managed_secrets.providers.base import RemoteKey, SecretProvider
from managed_secrets.testing.contract import ProviderContract

from .conftest import NAMESPACE, InMemoryCredentials, make_provider


def options(server: KeyVaultServer, **extra: Any) -> dict[str, Any]:
    return {
        "timeout_seconds": 3,
        "max_attempts": 1,
        "azure_connection_verify": str(server.ca_path),
        "azure_verify_challenge_resource": False,  # the vault is 127.0.0.1, not *.vault.azure.net
        "azure_authority_host": server.authority,
        "azure_api_version": API_VERSION,  # the newest lowkey-vault knows
        "azure_additionally_allowed_tenants": [CHALLENGE_TENANT],  # lowkey-vault's challenge names it
        **extra,
    }


def principal_config(server: KeyVaultServer) -> dict[str, Any]:
    return {
        "vaultURL": server.vault_url,
        "tenantID": server.tenant_id,
        "authSecretRef": {
            "clientID": {"name": "azure-sp", "key": "client-id"},
            "clientSecret": {"name": "azure-sp", "key": "client-secret"},
        },
    }


def principal_credentials(server: KeyVaultServer, secret: str | None = None) -> InMemoryCredentials:
    return InMemoryCredentials(
        {
            (NAMESPACE, "azure-sp", "client-id"): server.principal.client_id,
            (NAMESPACE, "azure-sp", "client-secret"): secret
            if secret is not None
            else server.principal.secret,
        }
    )


@pytest.fixture
def remote(keyvault: KeyVaultServer) -> KeyVaultRemote:
    return KeyVaultRemote(keyvault)


@pytest.fixture
def provider(keyvault: KeyVaultServer) -> Iterator[SecretProvider]:
    provider = make_provider(
        "azure", principal_config(keyvault), principal_credentials(keyvault), options(keyvault)
    )
    yield provider
    provider.close()


class TestKeyVaultContract(ProviderContract):
    """ServicePrincipal (client secret) is the contract's auth: the full Entra ID token flow runs."""

    @pytest.fixture
    def bad_credentials_provider(self, keyvault: KeyVaultServer) -> Iterator[SecretProvider]:
        credentials = principal_credentials(keyvault, secret="not-the-client-secret")
        provider = make_provider("azure", principal_config(keyvault), credentials, options(keyvault))
        yield provider
        provider.close()


def test_static_token_credential_option(keyvault: KeyVaultServer, remote: KeyVaultRemote) -> None:
    """A ready TokenCredential is used as given. lowkey-vault accepts any bearer token, so only the
    working side is provable here."""
    key = remote.new_key()
    remote.put(key, "via-static-token")
    good = make_provider(
        "azure",
        {"vaultURL": keyvault.vault_url},
        options=options(keyvault, azure_credential=StaticTokenCredential(keyvault.static_token)),
    )
    assert good.fetch(RemoteKey(key)) == b"via-static-token"


def test_workload_identity_with_token_request(keyvault: KeyVaultServer, remote: KeyVaultRemote) -> None:
    key = remote.new_key()
    remote.put(key, "via-workload-identity")
    credentials = InMemoryCredentials(tokens={(NAMESPACE, "app"): keyvault.federated_assertion})
    config = {
        "vaultURL": keyvault.vault_url,
        "tenantID": keyvault.tenant_id,
        "authType": "WorkloadIdentity",
        "clientID": keyvault.federated_client_id,
        "serviceAccountRef": {"name": "app"},
    }
    provider = make_provider("azure", config, credentials, options(keyvault))
    assert provider.fetch(RemoteKey(key)) == b"via-workload-identity"
    assert credentials.token_requests == [(NAMESPACE, "app", ("api://AzureADTokenExchange",))]
    # A token the federated credential does not trust is refused by Entra ID.
    wrong = InMemoryCredentials(tokens={(NAMESPACE, "app"): "a-token-from-elsewhere"})
    with pytest.raises(AuthFailed):
        make_provider("azure", config, wrong, options(keyvault)).fetch(RemoteKey(key))
    provider.close()


def test_workload_identity_from_token_file(
    keyvault: KeyVaultServer, remote: KeyVaultRemote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(keyvault.federated_assertion)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    key = remote.new_key()
    remote.put(key, "via-token-file")
    config = {
        "vaultURL": keyvault.vault_url,
        "tenantID": keyvault.tenant_id,
        "clientID": keyvault.federated_client_id,
        "authType": "WorkloadIdentity",
    }
    provider = make_provider("azure", config, InMemoryCredentials(), options(keyvault))
    assert provider.fetch(RemoteKey(key)) == b"via-token-file"
    provider.close()


@pytest.mark.parametrize("user_assigned", [False, True])
@pytest.mark.parametrize("style", ["app-service", "imds"])
def test_managed_identity(
    keyvault: KeyVaultServer,
    remote: KeyVaultRemote,
    monkeypatch: pytest.MonkeyPatch,
    style: str,
    user_assigned: bool,
) -> None:
    """Both managed-identity styles get a token from lowkey-vault's token endpoint. That endpoint knows
    no identities (any client id gets a token), so an unknown identity's refusal is not provable here."""
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    if style == "app-service":
        monkeypatch.setenv("IDENTITY_ENDPOINT", keyvault.identity_endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", keyvault.identity_header)
    else:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", keyvault.imds_host)
    key = remote.new_key()
    remote.put(key, "via-managed-identity")
    config: dict[str, Any] = {"vaultURL": keyvault.vault_url, "authType": "ManagedIdentity"}
    if user_assigned:
        config["clientID"] = str(uuid.uuid4())
    provider = make_provider("azure", config, InMemoryCredentials(), options(keyvault))
    assert provider.fetch(RemoteKey(key)) == b"via-managed-identity"
    provider.close()


def test_disabled_version(remote: KeyVaultRemote, provider: SecretProvider) -> None:
    key = remote.new_key()
    first = remote.put(key, "one")
    remote.put(key, "two")
    remote.disable(key, first)
    # lowkey-vault answers 404 for a disabled version (Key Vault: 403 SecretDisabled, whose translation
    # test_secret_disabled_403_is_version_not_found proves): the version is missing, the secret is not.
    with pytest.raises(VersionNotFound):
        provider.fetch(RemoteKey(key, first))
    assert provider.fetch(RemoteKey(key, "latest")) == b"two"


def test_secret_disabled_403_is_version_not_found() -> None:
    """Narrow fake: Key Vault's answer to reading a disabled version (403, inner error SecretDisabled),
    which lowkey-vault does not give, is a VersionNotFound saying so; any other 403 is AuthFailed."""
    from azure.core.exceptions import HttpResponseError, ODataV4Format

    from managed_secrets.providers.azure import _Translator

    def refusal(inner: str) -> HttpResponseError:
        error = HttpResponseError(message="Operation get is not allowed on a disabled secret.")
        error.status_code = 403
        error.error = ODataV4Format({"code": "Forbidden", "message": "m", "innererror": {"code": inner}})
        return error

    def raise_(error: HttpResponseError) -> None:
        raise error

    with pytest.raises(VersionNotFound) as caught:
        _Translator("kv").call(lambda: raise_(refusal("SecretDisabled")), "read x")
    assert "disabled" in str(caught.value)
    with pytest.raises(AuthFailed):
        _Translator("kv").call(lambda: raise_(refusal("AccessDenied")), "read x")


@pytest.mark.parametrize("name", ["has_underscore", "has.dot", "x" * 128, "", "ünïcode"])
def test_name_rules(provider: SecretProvider, name: str) -> None:
    with pytest.raises(InvalidSpec) as caught:
        provider.fetch(RemoteKey(name))
    assert "1-127 characters: letters, digits and '-'" in str(caught.value)


def test_longest_valid_name_is_accepted(provider: SecretProvider) -> None:
    with pytest.raises(RemoteKeyNotFound):
        provider.fetch(RemoteKey("a" * 127))


def test_malformed_version(provider: SecretProvider) -> None:
    with pytest.raises(VersionNotFound):
        provider.fetch(RemoteKey("fine", "not/a-version"))


def test_tls_is_verified(keyvault: KeyVaultServer, remote: KeyVaultRemote) -> None:
    """Without the harness CA the server's certificate is refused: verification is on."""
    key = remote.new_key()
    remote.put(key, "behind-tls")
    opts = options(keyvault, azure_credential=StaticTokenCredential(keyvault.static_token))
    del opts["azure_connection_verify"]
    provider = make_provider("azure", {"vaultURL": keyvault.vault_url}, options=opts)
    with pytest.raises(BackendUnavailable):
        provider.fetch(RemoteKey(key))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"vaultURL": "http://vault.example"}, "https://"),
        ({"vaultURL": "https://x.vault.azure.net"}, "tenantID"),
        ({"vaultURL": "https://x.vault.azure.net", "tenantID": "t"}, "clientSecret"),
        (
            {
                "vaultURL": "https://x.vault.azure.net",
                "authType": "WorkloadIdentity",
                "serviceAccountRef": {"name": "app"},
            },
            "clientID",
        ),
        ({"vaultURL": "https://x.vault.azure.net", "authType": "Password"}, "authType"),
    ],
)
def test_invalid_configuration(config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidBackend) as caught:
        make_provider("azure", config)
    assert message in str(caught.value)


def test_disabled_latest_version(remote: KeyVaultRemote, provider: SecretProvider) -> None:
    """The secret's newest version disabled: latest and that version are VersionNotFound (not a missing
    secret), also where the vault answers 404 for it, and the older version still reads."""
    key = remote.new_key()
    first = remote.put(key, "one")
    second = remote.put(key, "two")
    remote.disable(key, second)
    for version in (None, second):
        with pytest.raises(VersionNotFound) as caught:
            provider.fetch(RemoteKey(key, version))
        assert "not found or disabled" in str(caught.value)
    assert provider.fetch(RemoteKey(key, first)) == b"one"
