"""What happens on PostgreSQL when one side of a conversation stops answering.

- A statement already streaming when the database refuses its next chunk: the
  client sees a download cut short (the chunked body never ends), and the server
  logs one line, no trace.
"""

from __future__ import annotations

import psycopg
import pytest
import requests

from tests import pg_cluster
from tests.support import ADMIN_TOKEN
from tests.test_postgresql_servers import funded_seller

BUSY_TIMEOUT_MS = 1000


@pytest.fixture
def quick_server(postgresql_cluster, tmp_path, monkeypatch):
    """One `serve` process on a fresh database, its busy timeout 1 s; yields (its URL,
    a superuser URL to the database, its log)."""
    monkeypatch.setenv("CHARGEBOX_BUSY_TIMEOUT_MS", str(BUSY_TIMEOUT_MS))
    data, log = tmp_path / "data", tmp_path / "server.log"
    made = pg_cluster.initialised(postgresql_cluster, "lost", data)
    superuser = postgresql_cluster.url(db=made.app_url.rsplit("/", 1)[1])
    with pg_cluster.serving(made.app_url, data, log, ADMIN_TOKEN) as (url, _, _):
        yield url, superuser, log


def test_a_statement_the_database_cuts_short_is_an_unfinished_download_and_one_log_line(
    quick_server,
):
    url, superuser, log = quick_server
    seller_id, key = funded_seller(url, 5_000)
    with psycopg.connect(superuser) as blocker:
        # Its entries' chunks read the sale table: held, the first chunk waits for it for
        # the busy timeout (then LockTimeout), after the statement's head was sent.
        blocker.execute("LOCK TABLE sale IN ACCESS EXCLUSIVE MODE")
        answer = requests.get(url + "/api/statements?from=2000-01-01&to=2100-01-01&format=csv",
                              headers={"Authorization": f"Bearer {key}"}, stream=True,
                              timeout=30)  # fmt: skip
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            answer.content  # noqa: B018 (read to the end, which never comes)
    said = log.read_text()
    assert "Traceback" not in said, said
    errors = [line for line in said.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "/api/statements: LockTimeout at " in errors[0], said
    assert requests.get(url + "/health", timeout=10).json()["status"] == "ok"
