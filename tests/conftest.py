"""Shared fixtures: an in-process service on a real SQLite file, and real server processes."""

from __future__ import annotations

import pytest

from chargebox import db
from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests.support import ADMIN_TOKEN, running_server


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(db_path=tmp_path / "chargebox.db", admin_token=ADMIN_TOKEN)


@pytest.fixture
def service(config):
    """The use cases on a fresh database file, in this process."""
    prepare(config)
    yield Chargebox(config)
    db.close_database()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real server process shared by the contract tests (each test makes its own sellers)."""
    with running_server(tmp_path_factory.mktemp("server") / "chargebox.db") as process:
        yield process


@pytest.fixture
def fresh_server(tmp_path):
    """A real server process with an empty database, for tests that check exact totals."""
    with running_server(tmp_path / "chargebox.db") as process:
        yield process


@pytest.fixture
def admin(server):
    api = server.admin()
    yield api
    api.close()
