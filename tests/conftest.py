"""Shared fixtures: an in-process service on a real SQLite file, and real server processes."""

from __future__ import annotations

import os

import pytest

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests import pg_cluster
from tests.support import ADMIN_TOKEN, Api, new_seller, running_server
from tests.web_support import World
from tests.workloads import THREADS_FOR_HELD_COPIES


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(db_path=tmp_path / "chargebox.db", admin_token=ADMIN_TOKEN)


@pytest.fixture
def service(config):
    """The use cases on a fresh database file, in this process."""
    service = Chargebox(prepare(config))
    yield service
    service.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real server process shared by the contract tests (each test makes its own sellers)."""
    with running_server(tmp_path_factory.mktemp("server") / "chargebox.db") as process:
        yield process


@pytest.fixture
def fresh_server(tmp_path):
    """A real server process with an empty database, for tests that check exact totals
    (with a write slot for each copy the held-lock races send)."""
    with running_server(tmp_path / "chargebox.db", threads=THREADS_FOR_HELD_COPIES) as process:
        yield process


@pytest.fixture
def admin(server):
    api = server.admin()
    yield api
    api.close()


@pytest.fixture
def make_seller(server, admin):
    """make_seller(credit=0) -> (seller dict, Api acting as that seller)."""
    opened: list[Api] = []

    def make(credit: int = 0, name: str = "seller") -> tuple[dict, Api]:
        seller, key = new_seller(admin, name, credit)
        opened.append(server.seller(key))
        return seller, opened[-1]

    yield make
    for api in opened:
        api.close()


@pytest.fixture
def anonymous(server):
    api = Api(server.url)
    yield api
    api.close()


@pytest.fixture
def world(server, admin):
    """For the page tests: a funded seller with a pending request; browsers on demand."""
    made = World(server, admin)
    yield made
    made.api.close()
    for browser in made.opened:
        browser.http.close()


@pytest.fixture(scope="session")
def postgresql_cluster():
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole run (tests/pg_cluster.py).

    Without a PostgreSQL server installed the tests that need it skip and say how to
    get one, except under CI=true, where they must run.
    """
    if pg_cluster.server_bin() is None:
        message = "no PostgreSQL server: apt-get install postgresql (CI's .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    started = pg_cluster.start()
    yield started
    started.stop()
    started.remove()
