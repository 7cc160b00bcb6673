"""`managed-secrets exec` and `render` against the real OpenBao, moto, the GCP emulator and lowkey-vault,
and against the operator's own Secret on the real control plane: the same manifests (the cloud stores' are
those of their control-plane tests, from store_manifests), the same values, nothing on stdout, stderr or
disk."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from dynamic_database import database_engine
from harness.controlplane import free_port
from harness.gcp_emulator import GcpSecretManagerEmulator, SecretManagerRemote
from harness.lowkey import KeyVaultRemote, KeyVaultServer
from harness.moto_server import MotoServer
from harness.openbao import OpenBao
from harness.postgres import PostgresServer
from kube import Kube
from managed_secrets.api import GROUP, VERSION
from managed_secrets.testing.contract import Remote
from store_manifests import (
    BACKEND,
    PROPERTIES,
    azure_backend_spec,
    azure_provider_options,
    gcp_backend_spec,
    store_spec,
)

CLI = [sys.executable, "-m", "managed_secrets"]
TIMEOUT = 120


def manifest(kind: str, name: str, spec: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": meta, "spec": dict(spec)}


def write_manifests(folder: Path, documents: Sequence[Mapping[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(list(documents), sort_keys=False))
    return path


def vault_app(tmp_path: Path, addr: str, spec: Mapping[str, Any], folder: str = "repo") -> Path:
    """The manifests of an app reading Vault at ``addr`` (a SecretBackend ``vault`` and a ManagedSecret ``app``)."""
    documents = [
        manifest("SecretBackend", "vault", vault_backend_spec(addr)),
        manifest("ManagedSecret", "app", spec),
    ]
    return write_manifests(tmp_path / folder, documents)


def vault_backend_spec(addr: str) -> dict[str, Any]:
    """A production-like backend: Kubernetes auth, which only works in the cluster; exec uses the caller's."""
    return {
        "vault": {
            "server": addr,
            "path": "secret",
            "auth": {"kubernetes": {"role": "app", "serviceAccountRef": {"name": "app"}}},
        }
    }


def app_spec(key: str) -> dict[str, Any]:
    return {
        "backendRef": {"name": "vault"},
        "target": {"name": "app-config"},
        "data": [
            {"secretKey": "DB_PASSWORD", "remoteRef": {"key": key, "property": "password"}},
            {"secretKey": "config.json", "remoteRef": {"key": key, "property": "config"}},
        ],
        "dataFrom": [{"extract": {"key": f"{key}-extra"}}],
    }


def digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


#: The child prints digests of what it got, never the values, and where its files are.
CHILD = """
import hashlib, json, os, pathlib, sys
folder = os.environ.get("MANAGED_SECRETS_DIR")
files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
         for p in pathlib.Path(folder).rglob("*") if p.is_file()} if folder else {}
env = {k: hashlib.sha256(os.environ[k].encode()).hexdigest() for k in sys.argv[1:] if k in os.environ}
print(json.dumps({"dir": folder, "files": files, "env": env}), flush=True)
"""


def run_cli(args: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_no_canary(canary: str, *texts: str, folders: Sequence[Path] = ()) -> None:
    for text in texts:
        assert canary not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert canary.encode() not in path.read_bytes(), f"{path} holds the canary"


@pytest.fixture
def vault_key(openbao: OpenBao) -> tuple[str, str]:
    key = f"local/{uuid.uuid4().hex[:8]}"
    canary = f"canary-{uuid.uuid4().hex}"
    client = openbao.client()
    client.secrets.kv.v2.create_or_update_secret(
        path=key, secret={"password": canary, "config": json.dumps({"pw": canary})}, mount_point="secret"
    )
    client.secrets.kv.v2.create_or_update_secret(
        path=f"{key}-extra", secret={"API_TOKEN": f"{canary}-api", "REGION": "eu"}, mount_point="secret"
    )
    return key, canary


def caller_env(openbao: OpenBao, home: Path) -> dict[str, str]:
    return {"VAULT_TOKEN": openbao.root_token, "HOME": str(home), "MANAGED_SECRETS_TEST": "1"}


def test_exec_gives_the_process_the_values_and_leaves_nothing(
    openbao: OpenBao, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    path = vault_app(tmp_path, openbao.addr, app_spec(key))
    done = run_cli(
        ["exec", "-f", str(path), "--", sys.executable, "-c", CHILD, "DB_PASSWORD", "API_TOKEN", "REGION"],
        caller_env(openbao, tmp_path),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["env"] == {
        "DB_PASSWORD": digest(canary),
        "API_TOKEN": digest(f"{canary}-api"),
        "REGION": digest("eu"),
    }
    assert seen["files"] == {"app-config/config.json": digest(json.dumps({"pw": canary}))}
    assert seen["dir"] is not None
    assert not Path(seen["dir"]).exists(), "the private directory outlived the process"
    assert_no_canary(canary, done.stdout, done.stderr, folders=[tmp_path])


def test_exit_status_and_a_signal_pass_through_and_the_files_go(
    openbao: OpenBao, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    path = vault_app(tmp_path, openbao.addr, app_spec(key))
    env = caller_env(openbao, tmp_path)
    assert run_cli(["exec", "-f", str(path), "--", "sh", "-c", "exit 7"], env, tmp_path).returncode == 7

    marker = tmp_path / "dir.txt"
    script = f'echo "$MANAGED_SECRETS_DIR" > {marker}; exec sleep 300'
    process = subprocess.Popen(
        [*CLI, "exec", "-f", str(path), "--", "sh", "-c", script],
        env={**os.environ, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (marker.exists() and marker.read_text().strip()):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        folder = Path(marker.read_text().strip())
        assert (folder / "app-config" / "config.json").exists()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGTERM, stderr  # the child died of SIGTERM, so did exec
    assert not folder.exists(), "the private directory outlived a SIGTERM"
    assert_no_canary(canary, stdout, stderr, folders=[tmp_path])


def test_errors_name_the_manifest_line_and_the_reason_never_a_value(
    openbao: OpenBao, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    spec = app_spec(key)
    spec["data"].append({"secretKey": "MISSING", "remoteRef": {"key": key, "property": "nope"}})
    path = vault_app(tmp_path, openbao.addr, spec)
    done = run_cli(["exec", "-f", str(path), "--", "true"], caller_env(openbao, tmp_path), tmp_path)
    assert done.returncode == 1
    line = (
        next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text == "kind: ManagedSecret")
        - 1
    )
    assert f"{path}:{line}: ManagedSecret default/app: PropertyNotFound:" in done.stderr
    assert_no_canary(canary, done.stdout, done.stderr)

    # A server not on the allowlist gets no token: a manifest cannot send the caller's token elsewhere.
    elsewhere = vault_app(tmp_path, "https://vault.attacker.example", app_spec(key), folder="evil")
    done = run_cli(["render", "-f", str(elsewhere)], caller_env(openbao, tmp_path), tmp_path)
    assert done.returncode == 1
    assert "EndpointNotAllowed" in done.stderr


def test_overrides_point_a_backend_elsewhere_and_the_token_helper_is_used(
    openbao: OpenBao, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    path = vault_app(tmp_path, "https://vault.prod.example:8200", app_spec(key))
    overrides = tmp_path / "local.yaml"
    overrides.write_text(
        yaml.safe_dump({"backends": [{"name": "vault", "patch": {"vault": {"server": openbao.addr}}}]})
    )
    helper = tmp_path / "helper.sh"
    helper.write_text(f'#!/bin/sh\n[ "$1" = get ] && echo {openbao.root_token}\n')
    helper.chmod(0o700)
    (tmp_path / ".vault").write_text(f'token_helper = "{helper}"\n')
    env = {"HOME": str(tmp_path), "VAULT_TOKEN": ""}
    done = run_cli(
        ["render", "-f", str(path), "--overrides", str(overrides), "--format", "json", "--reveal"],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["app-config"]["DB_PASSWORD"] == canary
    masked = run_cli(
        ["render", "-f", str(path), "--overrides", str(overrides), "--format", "dotenv"], env, tmp_path
    )
    assert masked.returncode == 0, masked.stderr
    assert 'DB_PASSWORD="****"' in masked.stdout
    assert "config.json" in masked.stderr  # a file-shaped key is left out of dotenv, and said so
    assert_no_canary(canary, masked.stdout, masked.stderr)


def test_github_actions_masks_every_value_and_reveal_needs_a_file(
    openbao: OpenBao, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    path = vault_app(tmp_path, openbao.addr, app_spec(key))
    env = {**caller_env(openbao, tmp_path), "GITHUB_ACTIONS": "true"}
    refused = run_cli(["render", "-f", str(path), "--reveal"], env, tmp_path)
    assert refused.returncode == 2
    assert canary not in refused.stdout + refused.stderr
    out = tmp_path / "app.env"
    done = run_cli(
        ["render", "-f", str(path), "--reveal", "--format", "dotenv", "-o", str(out)], env, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"::add-mask::{canary}" in done.stdout.splitlines()
    assert f"::add-mask::{canary}-api" in done.stdout.splitlines()
    assert all(line.startswith("::add-mask::") for line in done.stdout.splitlines())
    assert f'DB_PASSWORD="{canary}"' in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def local_moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_exec_with_the_aws_credential_chain(local_moto: MotoServer, tmp_path: Path) -> None:
    assert local_moto.reader is not None
    assert local_moto.admin is not None
    key = f"local/{uuid.uuid4().hex[:8]}"
    canary = f"canary-{uuid.uuid4().hex}"
    local_moto.client("secretsmanager", keys=local_moto.admin).create_secret(
        Name=key, SecretString=json.dumps({"password": canary})
    )
    backend = {
        "aws": {
            "region": local_moto.region,
            "endpoint": local_moto.endpoint,
            "auth": {
                "secretRef": {
                    "accessKeyID": {"name": "aws-creds", "key": "id"},
                    "secretAccessKey": {"name": "aws-creds", "key": "secret"},
                }
            },
        }
    }
    spec = {
        "backendRef": {"name": "aws"},
        "data": [
            {"secretKey": "DB_PASSWORD", "remoteRef": {"key": key, "property": "password"}},
            {"secretKey": "RAW", "remoteRef": {"key": key}},
        ],
    }
    path = write_manifests(
        tmp_path / "repo", [manifest("SecretBackend", "aws", backend), manifest("ManagedSecret", "app", spec)]
    )
    env = {
        "AWS_ACCESS_KEY_ID": local_moto.reader.access_key_id,
        "AWS_SECRET_ACCESS_KEY": local_moto.reader.secret_access_key,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "HOME": str(tmp_path),
    }
    done = run_cli(
        ["exec", "-f", str(path), "--", sys.executable, "-c", CHILD, "DB_PASSWORD", "RAW"], env, tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["env"] == {
        "DB_PASSWORD": digest(canary),
        "RAW": digest(json.dumps({"password": canary})),
    }
    assert_no_canary(canary, done.stdout, done.stderr, folders=[tmp_path])


@pytest.mark.cluster
def test_render_matches_the_secret_the_operator_writes(
    operator: object, openbao: OpenBao, kube: Kube, namespace: str, vault_key: tuple[str, str], tmp_path: Path
) -> None:
    key, canary = vault_key
    kube.create_vault_token_backend(namespace, openbao.addr, openbao.root_token)
    spec = app_spec(key)
    spec["target"] = {
        "name": "app-config",
        "labels": {"team": "a"},
        "template": {
            "data": {"URL": "https://app:{{ DB_PASSWORD }}@db/{{ REGION }}", "REGION": "{{ REGION }}"}
        },
    }
    kube.create_ms(namespace, "app", spec)
    kube.wait_ready(namespace, "app")
    written = kube.existing_secret(namespace, "app-config")
    backend = kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "secretbackends", "vault")
    path = write_manifests(
        tmp_path / "repo",
        [
            manifest("SecretBackend", "vault", backend["spec"], namespace),
            manifest("ManagedSecret", "app", spec, namespace),
        ],
    )
    done = run_cli(["render", "-f", str(path), "--reveal"], caller_env(openbao, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    (rendered,) = list(yaml.safe_load_all(done.stdout))
    assert rendered["type"] == written.type
    assert rendered["data"] == dict(written.data or {})
    assert base64.b64decode(rendered["data"]["URL"]).decode() == f"https://app:{canary}@db/eu"
    assert canary not in done.stderr
    assert rendered["metadata"]["labels"] == {"team": "a"}
    assert rendered["metadata"]["namespace"] == namespace


@contextlib.contextmanager
def running_sandbox(paths: Path, home: Path) -> Iterator[str]:
    """`managed-secrets sandbox -f paths`, until it has printed its overrides file (yielded); then SIGTERM,
    after which it must have exited cleanly and removed that file."""
    sandbox = subprocess.Popen(
        [*CLI, "sandbox", "-f", str(paths)],
        env={**os.environ, "HOME": str(home)},
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    overrides = ""
    try:
        assert sandbox.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not any(line.startswith("run: managed-secrets exec") for line in lines):
            assert time.monotonic() < deadline, "the sandbox never became ready"
            line = sandbox.stdout.readline()
            assert line, sandbox.communicate()
            lines.append(line.strip())
        overrides = next(line for line in lines if line.startswith("overrides: ")).removeprefix("overrides: ")
        yield overrides
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.communicate(timeout=TIMEOUT)
    assert sandbox.returncode == 0
    assert not Path(overrides).exists(), "the sandbox left its overrides and token behind"


#: What a caller of a sandbox has: no Vault token of their own.
SANDBOX_CALLER = {"VAULT_TOKEN": ""}


def test_sandbox_and_exec_run_the_example_app_with_fake_values(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "app"
    env = {"HOME": str(tmp_path), **SANDBOX_CALLER}
    with running_sandbox(example, tmp_path) as overrides:
        app = [sys.executable, str(example / "app.py")]
        done = run_cli(["exec", "-f", str(example), "--overrides", overrides, "--", *app], env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "app: would connect to 127.0.0.1:5432/sandbox as sandbox-user"
        rendered = run_cli(
            ["render", "-f", str(example), "--overrides", overrides, "--format", "json", "--reveal"],
            env,
            tmp_path,
        )
        values = json.loads(rendered.stdout)
        assert values["app-db"]["DB_PASSWORD"].startswith("fake-")
        assert values["app-db"]["DB_USERNAME"] == "sandbox-user"


def test_sandbox_issues_certificates_from_a_ca_of_its_own(tmp_path: Path) -> None:
    certificate = {
        "role": "web",
        "commonName": "app.prod.example",
        "altNames": ["app.internal.example"],
        "ipSans": ["10.0.0.1"],
        "ttl": "720h",
    }
    path = write_manifests(
        tmp_path / "repo",
        [
            manifest("SecretBackend", "vault", vault_backend_spec("https://vault.prod.example:8200")),
            manifest(
                "ManagedSecret",
                "tls",
                {"backendRef": {"name": "vault"}, "target": {"name": "app-tls"}, "certificate": certificate},
            ),
        ],
    )
    env = {"HOME": str(tmp_path), **SANDBOX_CALLER}
    with running_sandbox(path, tmp_path) as overrides:
        run = ["exec", "-f", str(path), "--overrides", overrides, "--", sys.executable, "-c", CHILD]
        done = run_cli(run, env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert sorted(json.loads(done.stdout)["files"]) == [
            "app-tls/ca.crt",
            "app-tls/tls.crt",
            "app-tls/tls.key",
        ]
        rendered = run_cli(
            ["render", "-f", str(path), "--overrides", overrides, "--format", "json", "--reveal"],
            env,
            tmp_path,
        )
        assert rendered.returncode == 0, rendered.stderr
    tls = json.loads(rendered.stdout)["app-tls"]
    leaf = x509.load_pem_x509_certificate(tls["tls.crt"].encode())
    ca = x509.load_pem_x509_certificate(tls["ca.crt"].encode())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "app.prod.example"
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "app.internal.example" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    leaf.verify_directly_issued_by(ca)
    assert "sandbox CA" in str(ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    key = serialization.load_pem_private_key(tls["tls.key"].encode(), password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()  # type: ignore[union-attr]


def exec_store_app(
    tmp_path: Path,
    remote: Remote,
    backend_spec: Mapping[str, Any],
    env: Mapping[str, str],
    extra_args: Sequence[str] = (),
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Store a value with a canary in ``remote``, and exec the control-plane tests' manifests reading it
    with the caller's credentials in ``env``. Returns the run and the canary."""
    key = remote.new_key()
    canary = f"canary-{uuid.uuid4().hex}"
    remote.put(key, {"user": "app", "pass": canary})
    path = write_manifests(
        tmp_path / "repo",
        [manifest("SecretBackend", BACKEND, backend_spec), manifest("ManagedSecret", "db", store_spec(key))],
    )
    done = run_cli(
        ["exec", "-f", str(path), *extra_args, "--", sys.executable, "-c", CHILD, *PROPERTIES],
        {"HOME": str(tmp_path), **env},
        tmp_path,
    )
    assert_no_canary(canary, done.stdout, done.stderr, folders=[tmp_path])
    return done, canary


def assert_child_saw(done: subprocess.CompletedProcess[str], canary: str) -> None:
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["env"] == {"user": digest("app"), "pass": digest(canary)}
    assert seen["files"] == {}


def test_exec_with_gcp_application_default_credentials(
    gcp_emulator: GcpSecretManagerEmulator, tmp_path: Path
) -> None:
    remote = SecretManagerRemote(gcp_emulator)
    backend = gcp_backend_spec(gcp_emulator, "good")  # exec ignores auth.secretRef: ADC is the caller's
    nothing = {
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),  # no gcloud login either
        "GCE_METADATA_HOST": f"127.0.0.1:{free_port()}",
        "GCE_METADATA_IP": f"127.0.0.1:{free_port()}",
    }
    key_file = tmp_path / "adc.json"
    key_file.write_text(gcp_emulator.reader.json)
    done, canary = exec_store_app(
        tmp_path, remote, backend, {**nothing, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}
    )
    assert_child_saw(done, canary)

    refused, _ = exec_store_app(tmp_path, remote, backend, {**nothing, "GOOGLE_APPLICATION_CREDENTIALS": ""})
    assert refused.returncode == 1
    assert ": ManagedSecret default/db: AuthFailed:" in refused.stderr


def test_exec_with_azure_environment_credentials(keyvault: KeyVaultServer, tmp_path: Path) -> None:
    remote = KeyVaultRemote(keyvault)
    backend = azure_backend_spec(keyvault, "good")  # exec ignores authSecretRef: the caller's identity
    overrides = tmp_path / "local.yaml"
    overrides.write_text(
        yaml.safe_dump({"backends": [{"name": BACKEND, "options": azure_provider_options(keyvault)}]})
    )
    caller = {
        "AZURE_TENANT_ID": keyvault.tenant_id,
        "AZURE_CLIENT_ID": keyvault.principal.client_id,
        "AZURE_CLIENT_SECRET": keyvault.principal.secret,
        "AZURE_CONFIG_DIR": str(tmp_path / "azure"),  # no Azure CLI login
    }
    args = ["--overrides", str(overrides)]
    done, canary = exec_store_app(tmp_path, remote, backend, caller, args)
    assert_child_saw(done, canary)

    refused, _ = exec_store_app(
        tmp_path, remote, backend, {**caller, "AZURE_CLIENT_SECRET": "not-the-secret"}, args
    )
    assert refused.returncode == 1
    assert ": ManagedSecret default/db: AuthFailed:" in refused.stderr


def test_exec_issues_dynamic_credentials_for_the_process_and_revokes_them_after(
    openbao: OpenBao, postgres: PostgresServer, tmp_path: Path
) -> None:
    """A dynamic ManagedSecret under exec: the process gets working database credentials, which are
    revoked when it exits (as deleting the ManagedSecret would), unless revokeOnDelete is false."""
    with database_engine(openbao, postgres) as db:
        for revoke in (True, False):
            spec = {"backendRef": {"name": "vault"}, "dynamic": {"path": db.path, "revokeOnDelete": revoke}}
            path = vault_app(tmp_path, openbao.addr, spec, folder=f"repo-{revoke}")
            # The child logs in with what it got, as an application would, and says as whom.
            login = (
                f'PGPASSWORD="$password" {postgres.bindir / "psql"} -h 127.0.0.1 -p {postgres.port}'
                ' -U "$username" -d postgres -w -tAc "select current_user"'
            )
            done = run_cli(
                ["exec", "-f", str(path), "--", "sh", "-c", login], caller_env(openbao, tmp_path), tmp_path
            )
            assert done.returncode == 0, done.stderr
            username = done.stdout.strip()
            assert username.startswith("v-"), "a user of the engine"
            assert "password" not in done.stderr
            if revoke:
                assert username not in postgres.roles(), "revoked when the process exited"
            else:
                assert username in postgres.roles(), "revokeOnDelete false leaves the lease"
        assert db.issued() == 2
