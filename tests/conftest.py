"""Shared fixtures: an in-process service and real server processes, on each backend.

`backend` is "sqlite" or "postgresql" (tests/backends.py): every test that uses
`config`, `service`, `server`, `fresh_server`, `new_database` or `new_server` runs on
both, unless it is marked `sqlite_only` or `postgresql_only`.
"""

from __future__ import annotations

import pytest

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from tests import backends, pg_cluster
from tests.support import ADMIN_TOKEN, Api, new_seller, running_server
from tests.web_support import World
from tests.workloads import THREADS_FOR_HELD_COPIES


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        marked = metafunc.definition.get_closest_marker
        chosen = backends.BACKENDS
        if marked("sqlite_only") is not None:
            chosen = ("sqlite",)
        elif marked("postgresql_only") is not None:
            chosen = ("postgresql",)
        metafunc.parametrize("backend", chosen, indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def postgresql_template(request, tmp_path_factory):
    """The database every PostgreSQL test's database is copied from (made by init-db)."""
    cluster = request.getfixturevalue("postgresql_cluster")
    return backends.template(cluster, tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def new_database(request, backend):
    """new_database(home) -> (what --db names, --data-dir or None): an empty database."""

    def make(home):
        if backend == "sqlite":
            return home / "chargebox.db", None
        made = request.getfixturevalue("postgresql_template").copy(home)
        return made.url, made.data

    return make


@pytest.fixture(scope="session")
def new_server(new_database):
    """with new_server(home, **options) as server: a real server on a new empty database."""

    def serve(home, **options):
        db, data = new_database(home)
        return running_server(db, data_dir=data, **options)

    return serve


@pytest.fixture
def config(tmp_path, new_database) -> Config:
    db, data = new_database(tmp_path)
    if data is None:
        return Config(db_path=db, admin_token=ADMIN_TOKEN)
    return Config(db_url=db, data_dir=data, admin_token=ADMIN_TOKEN)


@pytest.fixture
def service(config):
    """The use cases on a fresh database file, in this process."""
    service = Chargebox(prepare(config))
    yield service
    service.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory, new_server):
    """One real server process shared by the contract tests (each test makes its own sellers)."""
    with new_server(tmp_path_factory.mktemp("server")) as process:
        yield process


@pytest.fixture
def fresh_server(tmp_path, new_server):
    """A real server process with an empty database, for tests that check exact totals
    (with a write slot for each copy the held-lock races send)."""
    with new_server(tmp_path, threads=THREADS_FOR_HELD_COPIES) as process:
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
    pg_cluster.needed()
    with pg_cluster.running() as started:  # stopped even if the run is sent SIGTERM
        yield started


# The service's sessions look for a deadlock this long after they begin to wait: a test's
# holder closes a cycle well before (it waits for nothing else), and looks far later.
APP_DEADLOCK_TIMEOUT = "2s"


@pytest.fixture
def pg_group_commit(postgresql_cluster, tmp_path):
    """PostgreSQL: a fresh database, the service on it (8 threads), and a superuser URL to
    the same database (test_postgresql_group_commit.py, test_postgresql_sale_batches.py)."""
    import psycopg

    data = tmp_path / "data"
    made = pg_cluster.initialised(postgresql_cluster, "gc", data)
    superuser = postgresql_cluster.url(db=made.app_url.rsplit("/", 1)[1])
    with psycopg.connect(superuser, autocommit=True) as admin:
        admin.execute(
            f"ALTER ROLE {made.app_role} IN DATABASE {made.app_url.rsplit('/', 1)[1]}"
            f" SET deadlock_timeout = '{APP_DEADLOCK_TIMEOUT}'"
        )
    config = prepare(Config(db_url=made.app_url, data_dir=data, admin_token=ADMIN_TOKEN, threads=8))
    service = Chargebox(config)
    yield service, superuser
    service.close()
