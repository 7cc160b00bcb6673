"""``managed-secrets sandbox``: a local OpenBao dev server with fake values of the right shape.

For every remote key the manifests read, the sandbox writes fake values (a committed fixtures file may give
them; none may be real) under the same path, in a KV mount like the backend's: a Vault backend keeps its
mount and KV version; any other store (AWS, GCP, Azure) gets a KV v2 mount of its own, and its overrides
entry is ``sandboxed``. The fields come from what the manifests use: a remoteRef's property, the variables
of the target's templates for an ``extract``, else one field named after the Secret key. Values take their
shape from the field's name (password, user, host, port, url, certificate, private key ...), so an
application can start against production's schema without any production secret. A certificate
ManagedSecret gets a PKI engine at its mount, with a sandbox CA of its own and the role it names, allowed to
issue for any name.

It prints how to point ``exec`` at it (an overrides file it writes, with the token in a file beside it,
both in a private directory removed when the sandbox stops) and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import yaml

from managed_secrets.local.overrides import BackendOverride, Overrides, VaultTokenSource
from managed_secrets.local.resolve import SANDBOX_VALUE_FIELD, Manifests, load
from managed_secrets.models.backend import Backend
from managed_secrets.models.managedsecret import BackendKind, DecodingStrategy, ManagedSecret
from managed_secrets.models.parse import parse_backend, parse_managed_secret

START_TIMEOUT = 30.0
#: The sandbox CA's lifetime and the most its roles issue for.
PKI_MAX_TTL = "87600h"
_NAME_PARTS = re.compile(r"[^a-z0-9]+")


class SandboxError(Exception):
    pass


# -- fake values ------------------------------------------------------------------------------------------


def _random(length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _pem_pair() -> tuple[str, str]:
    import datetime as dt  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox.invalid")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _port(words: set[str]) -> str:
    return "5432" if words & {"db", "database", "postgres", "pg"} else "8080"


#: (words any of which the name holds, words it must not hold, the fake value), first match wins.
_SHAPES: tuple[tuple[frozenset[str], frozenset[str], Callable[[set[str]], str]], ...] = (
    (frozenset({"crt", "cert", "certificate", "ca", "pem"}), frozenset({"key"}), lambda _: _pem_pair()[0]),
    (
        frozenset({"key"}),
        frozenset(),
        lambda w: _pem_pair()[1] if w & {"tls", "private", "pem", "ssh"} else "",
    ),
    (frozenset({"port"}), frozenset(), _port),
    (frozenset({"host", "hostname", "server"}), frozenset(), lambda _: "127.0.0.1"),
    (
        frozenset({"url", "uri", "endpoint", "dsn", "address", "addr"}),
        frozenset(),
        lambda _: "http://127.0.0.1:8080/",
    ),
    (frozenset({"email", "mail"}), frozenset(), lambda _: "dev@example.invalid"),
    (frozenset({"user", "username", "login", "owner"}), frozenset(), lambda _: "sandbox-user"),
    (frozenset({"database", "db", "dbname", "schema"}), frozenset(), lambda _: "sandbox"),
    (frozenset({"uuid", "id"}), frozenset(), lambda _: str(uuid.uuid4())),
    (frozenset({"json", "config"}), frozenset(), lambda _: "{}"),
)


def _words(text: str) -> set[str]:
    return set(_NAME_PARTS.split(text.lower())) - {""}


def fake_value(name: str, context: str = "") -> str:
    """A fake value shaped after its field or key name (``context``, the remote key, tells a database's port
    from a web server's); never a real one."""
    words = _words(name)
    for wanted, unwanted, make in _SHAPES:
        if (
            words & wanted
            and not words & unwanted
            and (value := make(words | _words(context) if make is _port else words))
        ):
            return value
    return f"fake-{_random()}"


# -- what the manifests read --------------------------------------------------------------------------------


@dataclass
class SandboxPlan:
    #: str(backend id) -> the backend (parsed from the manifests)
    backends: dict[str, Backend] = field(default_factory=dict)
    #: (str(backend id), remote key) -> field names -> fake value
    values: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: (str(backend id), remote key) -> the KV v2 version a manifest pins (written that many times)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: PKI mount -> the roles certificates are issued with
    pki: dict[str, set[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _template_variables(ms: ManagedSecret) -> set[str]:
    template = ms.spec.target.template
    if template is None:
        return set()
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 - only parsed, never rendered
    found: set[str] = set()
    for source in [*template.data.values(), *template.binary_data.values()]:
        try:
            found |= jinja2.meta.find_undeclared_variables(environment.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
    return found - {"values"}


def _backend_of(sandbox: SandboxPlan, ms: ManagedSecret) -> str | None:
    ref = ms.spec.backend_ref
    namespace = ms.ref.namespace if ref.kind is BackendKind.SECRET_BACKEND else None
    for key, backend in sandbox.backends.items():
        if (backend.id.kind, backend.id.name, backend.id.namespace) == (ref.kind, ref.name, namespace):
            return key
    return None


@dataclass
class _Wants:
    """The fields one ManagedSecret reads from one backend, with the fixtures' values where given."""

    sandbox: SandboxPlan
    backend_id: str
    vault: bool
    fixtures: Mapping[str, Any]

    def add(
        self,
        key: str,
        fields: Mapping[str, str],
        version: str | None,
        decoding: DecodingStrategy = DecodingStrategy.NONE,
    ) -> None:
        """``fields``: field name -> the name its shape is guessed from. A generated value is stored in
        the form ``decoding`` reads (base64 for Base64 and Base64URL); a fixture's as it is."""
        slot = self.sandbox.values.setdefault((self.backend_id, key), {})
        fixture = self.fixtures.get(key)
        for name, hint in fields.items():
            if isinstance(fixture, Mapping) and name in fixture:
                slot[name] = str(fixture[name])
            elif isinstance(fixture, str) and name == SANDBOX_VALUE_FIELD:
                slot[name] = fixture
            elif name not in slot:
                slot[name] = _stored_form(fake_value(hint, key), decoding)
        if self.vault and version is not None and version.isdigit():
            slot_id = (self.backend_id, key)
            self.sandbox.versions[slot_id] = max(self.sandbox.versions.get(slot_id, 1), int(version))


def _stored_form(value: str, decoding: DecodingStrategy) -> str:
    if decoding is DecodingStrategy.BASE64:
        return base64.b64encode(value.encode()).decode()
    if decoding is DecodingStrategy.BASE64URL:
        return base64.urlsafe_b64encode(value.encode()).decode()
    return value


def plan(manifests: Manifests, fixtures: Mapping[str, Mapping[str, Any]]) -> SandboxPlan:
    result = SandboxPlan()
    for document in manifests.backends:
        backend = parse_backend(document.body)
        result.backends[str(backend.id)] = backend
    for document in manifests.managed_secrets:
        ms = parse_managed_secret(document.body)
        backend_id = _backend_of(result, ms)
        if backend_id is None:
            result.notes.append(
                f"{document.where}: ManagedSecret {ms.ref}: its backend is not in the manifests"
            )
            continue
        backend = result.backends[backend_id]
        if ms.spec.dynamic is not None:
            result.notes.append(
                f"{document.where}: ManagedSecret {ms.ref}: dynamic credentials need their engine (a database,"
                " ...); the sandbox fakes none: left out"
            )
            continue
        certificate = ms.spec.certificate
        if certificate is not None:  # a certificate resource reads no data
            if backend.provider == "vault":
                result.pki.setdefault(certificate.mount.strip("/"), set()).add(certificate.role)
            else:
                result.notes.append(
                    f"{document.where}: ManagedSecret {ms.ref}: a certificate needs a Vault backend; left out"
                )
            continue
        wants = _Wants(result, backend_id, backend.provider == "vault", fixtures.get(backend.id.name, {}))
        for entry in ms.spec.data:
            remote = entry.remote_ref
            name = remote.property or (entry.secret_key if wants.vault else SANDBOX_VALUE_FIELD)
            wants.add(
                remote.key,
                {name: remote.property or entry.secret_key},
                remote.version,
                remote.decoding_strategy,
            )
        for item in ms.spec.data_from:
            fixture = wants.fixtures.get(item.extract.key)
            fields = sorted(fixture) if isinstance(fixture, Mapping) else sorted(_template_variables(ms))
            if not fields:
                fields = [SANDBOX_VALUE_FIELD]
                result.notes.append(
                    f"{document.where}: ManagedSecret {ms.ref}: extract {item.extract.key}: no template and no"
                    " fixture say which fields it has; one field 'value' is written (add it to --fixtures)"
                )
            wants.add(
                item.extract.key,
                {name: name for name in fields},
                item.extract.version,
                item.extract.decoding_strategy,
            )
    return result


# -- the server -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_bao(explicit: str | None) -> str:
    candidates = [explicit] if explicit else ["bao", "vault"]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    for name in candidates:
        found = shutil.which(name, path=search) if name else None
        if found:
            return found
    raise SandboxError("no OpenBao binary: install `bao` (https://openbao.org) or pass --bao PATH")


class _Vault:
    def __init__(self, addr: str, token: str) -> None:
        self.addr = addr
        self._token = token

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - our own loopback server
            f"{self.addr}/v1/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"X-Vault-Token": self._token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            text = response.read()
        return json.loads(text) if text else None


def _wait_healthy(addr: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SandboxError(f"OpenBao exited at start (status {server.returncode})")
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=2):  # noqa: S310
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SandboxError(f"OpenBao did not answer within {START_TIMEOUT:.0f} s")


def _mount_for(backend: Backend, index: int) -> tuple[str, str]:
    if backend.provider == "vault":
        return str(backend.config.get("path") or "secret").strip("/"), str(
            backend.config.get("version") or "v2"
        )
    return f"sandbox-{index}-{backend.provider}-{backend.id.name}", "v2"


def _seed_pki(vault: _Vault, mount: str, roles: set[str], *, replace: bool) -> None:
    """A PKI engine with a fresh sandbox CA, whose roles issue for any name: what a certificate
    ManagedSecret asks for is production's, the trust is the sandbox's own."""
    if replace:
        vault.call("DELETE", f"sys/mounts/{mount}")
    vault.call("POST", f"sys/mounts/{mount}", {"type": "pki", "config": {"max_lease_ttl": PKI_MAX_TTL}})
    vault.call(
        "POST",
        f"{mount}/root/generate/internal",
        {"common_name": f"managed-secrets sandbox CA ({mount})", "ttl": PKI_MAX_TTL},
    )
    for role in sorted(roles):
        vault.call(
            "POST",
            f"{mount}/roles/{role}",
            {
                "allow_any_name": True,
                "enforce_hostnames": False,
                "allow_ip_sans": True,
                "allow_localhost": True,
                "max_ttl": PKI_MAX_TTL,
            },
        )


def seed(vault: _Vault, sandbox: SandboxPlan) -> Overrides:
    mounts = {path.rstrip("/") for path in (vault.call("GET", "sys/mounts") or {}).get("data", {})}
    entries: list[BackendOverride] = []
    where: dict[str, tuple[str, str]] = {}
    for index, (backend_id, backend) in enumerate(sorted(sandbox.backends.items())):
        mount, version = _mount_for(backend, index)
        if mount in mounts:
            vault.call(
                "DELETE", f"sys/mounts/{mount}"
            )  # the dev server's own secret/ may be of the other version
        vault.call("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": version.lstrip("v")}})
        mounts.add(mount)
        where[backend_id] = (mount, version)
        patch: dict[str, Any] = {
            "vault": {
                "server": vault.addr,
                "path": mount,
                "version": version,
                "namespace": None,
                "caBundle": None,
            }
        }
        if backend.provider != "vault":
            patch[backend.provider] = None
        entries.append(
            BackendOverride(
                name=backend.id.name,
                kind=backend.id.kind,
                namespace=backend.id.namespace,
                patch=patch,
                sandboxed=backend.provider != "vault",
            )
        )
    kv_mounts = {mount for mount, _version in where.values()}
    for mount, roles in sorted(sandbox.pki.items()):
        if mount in kv_mounts:
            raise SandboxError(f"the PKI mount {mount} is also a backend's KV mount")
        _seed_pki(vault, mount, roles, replace=mount in mounts)
        mounts.add(mount)
    for (backend_id, key), values in sorted(sandbox.values.items()):
        mount, version = where[backend_id]
        for _ in range(sandbox.versions.get((backend_id, key), 1)):
            if version == "v1":
                vault.call("POST", f"{mount}/{key}", values)
            else:
                vault.call("POST", f"{mount}/data/{key}", {"data": values})
    return Overrides(backends=tuple(entries))


def run_sandbox(
    paths: Sequence[str],
    *,
    namespace: str | None,
    fixtures_path: str | None,
    bao: str | None,
    port: int | None,
) -> int:
    manifests = load(paths, namespace or "default")
    if manifests.problems:
        for problem in manifests.problems:
            print(problem, file=sys.stderr)  # noqa: T201
        return 1
    fixtures: dict[str, Any] = {}
    if fixtures_path:
        fixtures = yaml.safe_load(Path(fixtures_path).read_text(encoding="utf-8")) or {}
    sandbox = plan(manifests, fixtures)
    binary = find_bao(bao)
    addr = f"http://127.0.0.1:{port or _free_port()}"
    token = f"sandbox-{_random(32)}"
    workdir = Path(tempfile.mkdtemp(prefix="managed-secrets-sandbox-"))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address={addr.removeprefix('http://')}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(workdir)},
    )
    try:
        _wait_healthy(addr, server)
        overrides = seed(_Vault(addr, token), sandbox)
        token_file = workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        overrides = Overrides(
            backends=tuple(
                e.model_copy(update={"vault_token": VaultTokenSource(file=str(token_file))})
                for e in overrides.backends
            )
        )
        overrides_file = workdir / "overrides.yaml"
        overrides_file.write_text(overrides.dump())
        for note in sandbox.notes:
            print(f"note: {note}", file=sys.stderr)  # noqa: T201
        files = " ".join(f"-f {p}" for p in paths)
        served = f"fake values for {len(sandbox.values)} remote keys, a CA for {len(sandbox.pki)} PKI mounts"
        print(f"sandbox: OpenBao at {addr}, {served}", flush=True)  # noqa: T201
        print(f"overrides: {overrides_file}", flush=True)  # noqa: T201
        print(f"run: managed-secrets exec {files} --overrides {overrides_file} -- COMMAND", flush=True)  # noqa: T201
        while not stop.is_set() and server.poll() is None:
            stop.wait(0.5)
        return 0 if stop.is_set() else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
