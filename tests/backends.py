"""The suite on both backends: SQLite files, and PostgreSQL databases of one throwaway cluster.

A test that asks for the `backend` fixture (conftest.py's `config`, `service`,
`server` and `fresh_server` do) runs once per backend; a test marked
`sqlite_only` is about SQLite itself (PRAGMAs, the file, the flock gate) and
runs on it alone. What --db names is a Path for SQLite and the app role's URL
for PostgreSQL; `database_of(config)` gives it for a Config.

A PostgreSQL database for a test is a copy of one template made once per run as
an operator makes one (`chargebox init-db --db OWNER_URL --grant-to APP_ROLE
--data-dir DIR`), so that a test pays for `CREATE DATABASE ... TEMPLATE`, not
for the schema. Every copy belongs to the template's owner, grants the same app
role the same rights, and has its own copy of the template's data directory
(the ledger key that seals it).
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

import psycopg

from chargebox.config import Config
from tests import pg_cluster

BACKENDS = ("sqlite", "postgresql")
POSTGRESQL = "postgresql://"


@dataclasses.dataclass(frozen=True)
class Template:
    """A database made by init-db once; `copy()` gives each test its own."""

    cluster: pg_cluster.Cluster
    roles: pg_cluster.Roles
    name: str
    data: Path  # its data directory: the ledger key the copies are sealed with

    def copy(self, home: Path) -> Database:
        name = f"{self.name}_{next(_copies)}"
        owner = psycopg.conninfo.conninfo_to_dict(self.roles.owner_url)["user"]
        with psycopg.connect(self.cluster.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {self.name} OWNER {owner}")
            admin.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            admin.execute(f"GRANT CONNECT ON DATABASE {name} TO {self.roles.app_role}")
        data = home / "data"
        shutil.copytree(self.data, data)
        made = Database(
            url=_with_db(self.roles.app_url, name),
            owner_url=_with_db(self.roles.owner_url, name),
            data=data,
        )
        _owners[made.url] = made.owner_url
        return made


@dataclasses.dataclass(frozen=True)
class Database:
    """One test's PostgreSQL database: the service's URL, its owner's, its data dir."""

    url: str
    owner_url: str
    data: Path

    def config(self, **settings) -> Config:
        return Config(db_url=self.url, data_dir=self.data, **settings)


_copies = itertools.count()
_owners: dict[str, str] = {}


def owner_url(url: str) -> str:
    """The owner's URL of a test's database, given the service's (as the tests do things
    behind the service's back that its own role may not)."""
    return _owners[url]


def template(cluster: pg_cluster.Cluster, home: Path) -> Template:
    """init-db once into a fresh database; then no connection may stay open to it."""
    data = home / "data"
    roles = pg_cluster.initialised(cluster, "tmpl", data)
    name = psycopg.conninfo.conninfo_to_dict(roles.owner_url)["dbname"]
    return Template(cluster=cluster, roles=roles, name=name, data=data)


def _with_db(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def is_postgresql(db: Path | str) -> bool:
    return str(db).startswith(POSTGRESQL)


def database_of(config: Config) -> Path | str:
    """What --db names for this config: the SQLite file, or the PostgreSQL URL."""
    return config.db_url or config.db_path


def data_dir_of(db: Path | str, data: Path | None) -> Path | None:
    """--data-dir for a PostgreSQL database; None for a file (its secrets are beside it)."""
    return data if is_postgresql(db) else None


def read_only_postgresql(url: str):
    """A fresh connection that may only read, whatever its role may do."""
    return psycopg.connect(
        url, autocommit=True, options="-c default_transaction_read_only=on", connect_timeout=10
    )
