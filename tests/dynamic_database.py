"""OpenBao's database engine on a real PostgreSQL, for the dynamic-secrets tests: a mount per use whose role
``app`` records each user it creates in a table of its own, so tests count issues exactly."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from harness.openbao import OpenBao
from harness.postgres import PostgresServer


@dataclass
class Database:
    openbao: OpenBao
    postgres: PostgresServer
    mount: str
    table: str

    @property
    def path(self) -> str:
        return f"{self.mount}/creds/app"

    def role(self, default_ttl: str, max_ttl: str) -> None:
        """(Re)define the engine's role ``app``: leases issued from now on get these TTLs."""
        statements = [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            f"INSERT INTO {self.table} (name) VALUES ('{{{{name}}}}');",  # noqa: S608 - our table
        ]
        self.openbao.client().write(
            f"{self.mount}/roles/app",
            db_name="pg",
            creation_statements=statements,
            default_ttl=default_ttl,
            max_ttl=max_ttl,
        )

    def issued(self) -> int:
        """How many users the engine ever created for this test."""
        return int(self.postgres.query(f"select count(*) from {self.table}"))  # noqa: S608 - our table

    def lease_expiry(self, lease_id: str) -> datetime:
        answer = self.openbao.client().sys.read_lease(lease_id)
        return datetime.fromisoformat(answer["data"]["expire_time"])


@contextlib.contextmanager
def database_engine(openbao: OpenBao, postgres: PostgresServer) -> Iterator[Database]:
    """A database engine of its own (a mount per use) connected to the PostgreSQL, with role ``app``."""
    suffix = secrets.token_hex(4)
    mount, table = f"db-{suffix}", f"issued_{suffix}"
    postgres.query(f"create table {table} (name text not null, at timestamptz not null default now())")
    client = openbao.client()
    client.sys.enable_secrets_engine("database", path=mount)
    client.write(
        f"{mount}/config/pg",
        plugin_name="postgresql-database-plugin",
        connection_url=postgres.connection_url,
        username=postgres.ADMIN,
        password=postgres.admin_password,
        allowed_roles="app",
        verify_connection=True,
    )
    db = Database(openbao, postgres, mount, table)
    db.role("1h", "2h")
    yield db
    client.sys.disable_secrets_engine(mount)  # revokes what is left
