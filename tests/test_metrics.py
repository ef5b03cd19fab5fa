"""GET /metrics (issue 14, item 6): Prometheus's text format, admin only, summed over
`--processes K`, labelled by route patterns only.

Scrapes are parsed with prometheus-client's own parser, from real servers on both
backends. The sum over processes is proved by sending requests until the access
log shows that both children served some, then checking that scrapes answered by
each child count every request exactly; then a child is killed and the sums stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import signal
import struct
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from chargebox import metric_files, metrics
from chargebox.metrics import BATCH_BUCKETS, LATENCY_BUCKETS
from tests.support import (
    ADMIN_TOKEN,
    Api,
    drop_trigger,
    new_seller,
    running_server,
    writable,
    write_lock_held,
)

PHONE = "09121234567"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOT_FOUND = {"route": "(unmatched)", "method": "GET", "status": "404"}


def scrape(url: str) -> tuple[dict, requests.Response]:
    """{(sample name, frozenset of labels): value} of one scrape, on a new connection."""
    response = requests.get(url + "/metrics", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return samples_in(response.text), response


def samples_in(text: str) -> dict:
    """{(sample name, frozenset of labels): value} of an exposition's text."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: dict, label: str) -> set[str]:
    return {dict(labels)[label] for _, labels in samples if label in dict(labels)}


def test_requests_latency_writes_and_sizes_are_counted(tmp_path, new_server, backend):
    with new_server(tmp_path) as server:
        admin = server.admin()
        _, key = new_seller(admin, "counted", credit=100_000)
        seller = server.seller(key)
        for _ in range(5):
            assert seller.post("/api/sales", {"phone": PHONE, "amount": 1000}).status_code == 201
        assert seller.post("/api/sales", {"phone": PHONE, "amount": 10**9}).status_code == 409
        too_large = seller.request("POST", "/api/sales", data=b" " * (64 * 1024 + 1))
        assert too_large.status_code == 413  # refused before routing, counted by its route
        assert admin.get("/api/sellers/999999").status_code == 404
        assert Api(server.url).get("/no/such/page").status_code == 404
        before, _ = scrape(server.url)
        assert seller.get("/api/me").status_code == 200
        after, _ = scrape(server.url)
        admin.close()
        seller.close()
    sales = {"route": "/api/sales", "method": "POST"}
    assert value(before, "chargebox_http_requests_total", **sales, status="201") == 5
    assert value(before, "chargebox_http_requests_total", **sales, status="409") == 1
    assert value(before, "chargebox_http_requests_total", **sales, status="413") == 1
    assert value(before, "chargebox_http_requests_total", route="/api/sellers/{ident}",
                 method="GET", status="404") == 1  # fmt: skip
    assert value(before, "chargebox_http_requests_total", route="(unmatched)", method="GET",
                 status="404") == 1  # fmt: skip
    me = {"route": "/api/me", "method": "GET", "status": "200"}
    assert value(after, "chargebox_http_requests_total", **me) == 1 + value(
        before, "chargebox_http_requests_total", **me
    )
    assert (
        value(after, "chargebox_http_requests_total", route="/metrics", method="GET", status="200")
        == 1
    )  # fmt: skip  (the first scrape, counted once it answered)
    buckets = {
        float(dict(labels)["le"]): count
        for (name, labels), count in before.items()
        if name == "chargebox_http_request_duration_seconds_bucket" and dict(labels).get(
            "route") == "/api/sales" and dict(labels).get("method") == "POST"
    }  # fmt: skip
    assert sorted(buckets) == [*LATENCY_BUCKETS, float("inf")]
    assert (
        buckets[float("inf")]
        == 7  # 201, 409 and 413
        == value(before, "chargebox_http_request_duration_seconds_count", **sales)
    )
    assert list(buckets.values()) == sorted(buckets.values())  # cumulative
    assert value(before, "chargebox_http_request_duration_seconds_sum", **sales) > 0
    transactions = value(before, "chargebox_write_batch_size_count")
    assert value(before, "chargebox_write_batch_size_sum") >= 6 + 3  # the sales, seller, credit
    assert 1 <= transactions == value(before, "chargebox_write_lock_wait_seconds_count")
    batch_buckets = {
        float(dict(labels)["le"])
        for (name, labels) in before
        if name == "chargebox_write_batch_size_bucket"
    }
    assert batch_buckets == {*map(float, BATCH_BUCKETS), float("inf")}
    assert value(before, "chargebox_database_bytes") > 0
    has_wal = ("chargebox_wal_bytes", frozenset()) in before
    assert has_wal == (backend == "sqlite")
    assert before[("chargebox_schema_guards_missing", frozenset())] == 0


def test_a_guard_dropped_under_a_running_server_shows_at_the_next_scrape(tmp_path, new_server):
    """The server runs on without it (the next start refuses): the scrape says so, for an
    alert, before any audit runs. A UNIQUE dropped counts as a trigger does."""
    with new_server(tmp_path) as server:
        before, _ = scrape(server.url)
        with writable(server.db_path) as conn:
            drop_trigger(conn, "ledger_entry_no_update")
            drop_trigger(conn, "sale_no_delete")
            conn.execute("ALTER TABLE ledger_entry DROP CONSTRAINT"
                         " ledger_entry_credit_request_id_key" if conn.postgresql
                         else "DROP INDEX ledger_entry_credit_request_id")  # fmt: skip
        after, _ = scrape(server.url)
    assert before[("chargebox_schema_guards_missing", frozenset())] == 0
    assert after[("chargebox_schema_guards_missing", frozenset())] == 3


def test_only_the_admin_may_read_the_metrics(tmp_path, new_server):
    with new_server(tmp_path) as server:
        admin = server.admin()
        _, key = new_seller(admin, "nosy")
        anonymous = requests.get(server.url + "/metrics", timeout=10)
        seller = server.seller(key).get("/metrics")
        wrong = requests.get(
            server.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
        )
        allowed = admin.get("/metrics")
        negotiated = admin.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        admin.close()
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert seller.status_code == 403 and seller.json()["error"]["code"] == "forbidden"
    assert allowed.status_code == 200 and "chargebox_http_requests_total" in allowed.text
    assert negotiated.headers["Content-Type"].startswith("application/openmetrics-text")
    assert negotiated.text.endswith("# EOF\n")  # OpenMetrics, as Prometheus asks for it


def test_labels_hold_route_patterns_never_paths_ids_or_secrets(tmp_path, new_server):
    with new_server(tmp_path) as server:
        admin = server.admin()
        _, key = new_seller(admin, "labels", credit=10_000)
        seller = server.seller(key)
        seller.get("/api/sales/987654321")
        admin.get("/api/sellers/123456789")
        seller.get(f"/api/{key}/x?token={ADMIN_TOKEN}")
        seller.request("BREW", "/api/sales")
        seller.get("/%0Aforged")
        samples, response = scrape(server.url)
        admin.close()
        seller.close()
    for secret in ("987654321", "123456789", key, ADMIN_TOKEN, "BREW", "forged"):
        assert secret not in response.text
    routes = label_values(samples, "route")
    assert {"/api/sales/{ident}", "/api/sellers/{ident}", "(unmatched)"} <= routes
    assert all(re.fullmatch(r"\(unmatched\)|/[a-z0-9_/{}.-]*", route) for route in routes), routes
    assert label_values(samples, "method") <= {*metrics.METHODS, "other"}
    assert "other" in label_values(samples, "method")


def test_a_503_is_counted_and_so_is_the_wait_for_the_lock(tmp_path):
    """SQLite only: another connection holds the write lock past a 0.3 s busy timeout."""
    db = tmp_path / "cb.db"
    with running_server(db, env={"CHARGEBOX_BUSY_TIMEOUT_MS": "300"}) as server:
        admin = server.admin()
        _, key = new_seller(admin, "busy", credit=10_000)
        with write_lock_held(db):
            refused = server.seller(key).post("/api/sales", {"phone": PHONE, "amount": 100})
        samples, _ = scrape(server.url)
        admin.close()
    assert refused.status_code == 503
    assert value(samples, "chargebox_http_unavailable_total", route="/api/sales") == 1
    assert value(samples, "chargebox_http_requests_total", route="/api/sales", method="POST",
                 status="503") == 1  # fmt: skip
    waits = {
        float(dict(labels)["le"]): count
        for (name, labels), count in samples.items()
        if name == "chargebox_write_lock_wait_seconds_bucket"
    }
    assert waits[float("inf")] - waits[0.1] >= 1  # one wait of 0.1 s or more: the timeout


def pids_in(log, ids: set[str] | None = None) -> dict[str, str]:
    """{request id: pid} from the access log (of the given ids, if any)."""
    found = dict(re.findall(r" id=(\S+) .* pid=(\d+)$", log.read_text(), re.MULTILINE))
    return found if ids is None else {ident: found[ident] for ident in ids if ident in found}


def test_with_two_processes_any_scrape_sums_both_and_a_dead_ones_counts_stay(tmp_path, new_server):
    log = tmp_path / "access.log"
    env = {"CHARGEBOX_PROCESSES": "2", "CHARGEBOX_ACCESS_LOG": str(log)}
    with new_server(tmp_path, env=env) as server:
        sent: set[str] = set()
        deadline = time.monotonic() + 60
        while len(set(pids_in(log, sent).values())) < 2 and time.monotonic() < deadline:
            for _ in range(20):  # a new connection each: the kernel spreads them
                # A path of no route, which nothing else (the readiness probe) asks for.
                answer = requests.get(server.url + "/counted", timeout=10)
                sent.add(answer.headers["X-Request-Id"])
        served_by = set(pids_in(log, sent).values())
        assert len(served_by) == 2, "every request went to one process"
        counted = {"route": "(unmatched)", "method": "GET", "status": "404"}

        def scrapes_until(wanted: int, of: set[str]) -> set[str]:
            """Scrape until `wanted` of the pids `of` (or others) answered; each must count
            every /health sent."""
            answered: set[str] = set()
            ends = time.monotonic() + 60
            while len(answered) < wanted and time.monotonic() < ends:
                samples, response = scrape(server.url)
                assert value(samples, "chargebox_http_requests_total", **counted) == len(sent)
                answered |= set(pids_in(log, {response.headers["X-Request-Id"]}).values())
                answered &= of
            return answered

        assert scrapes_until(2, served_by) == served_by  # each child sums both
        victim = sorted(served_by)[0]
        os.kill(int(victim), signal.SIGKILL)
        ends = time.monotonic() + 60
        while len(now := _children(server.proc.pid) - {victim}) < 2 and time.monotonic() < ends:
            time.sleep(0.05)  # polled until the supervisor has started the replacement
        assert len(now) == 2, "the killed child was not replaced"
        # The survivor and the replacement both still count the dead child's requests.
        assert scrapes_until(2, now) == now, "no scrape was answered by the replacement"
        shared = _metrics_directory(next(iter(now)))
        assert not list(shared.glob(f"*_{victim}.db")), "the dead child's files were kept"
        assert (shared / f"counter_{metric_files.ENDED}.db").exists()


def test_a_damaged_metrics_file_fails_the_scrape_503_and_the_log_names_it(tmp_path):
    """A file prometheus-client cannot read (its header says more than it holds: a disk's
    damage) was a 500, a bug's answer. Left out of the sum its counts would fall, so the
    scrape still fails, but as 503 `unavailable`, the log naming the file to move aside."""
    with running_server(tmp_path / "cb.db", env={"CHARGEBOX_PROCESSES": "2"}) as server:
        ends, shared = time.monotonic() + 60, None
        while shared is None and time.monotonic() < ends:
            requests.get(server.url + "/health", timeout=10)  # a child maps its file as it counts
            for child in _children(server.proc.pid):
                with contextlib.suppress(AssertionError, OSError):  # not mapped yet, or gone
                    shared = _metrics_directory(child)
            time.sleep(0.05)  # polled until a child has mapped its counts file
        assert shared is not None, "no child mapped its metrics file"
        damaged = shared / "counter_999999.db"
        damaged.write_bytes(struct.pack("i", 100) + bytes(4))
        answer = requests.get(server.url + "/metrics", headers=ADMIN, timeout=30)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "unavailable"
        assert str(damaged) not in answer.text
        said = server.log_path.read_text()
        assert f"{damaged} cannot be read" in said and "Traceback" not in said, said
        damaged.unlink()
        scrape(server.url)


def ended_children(counts: tuple[int, ...]) -> list[int]:
    """Forked processes that each count, as a forked server does, `count` requests of
    random durations and a batch, then end: their pids."""
    ended = []
    for count in counts:
        pid = os.fork()
        if pid == 0:
            for _ in range(count):
                metrics.observe({}, "GET", 404, random.random())
            metrics.lock_waited(random.random() / 1000)
            metrics.write_committed(count)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        ended.append(pid)
    return ended


def test_an_ended_process_counts_join_one_file_and_no_sum_moves(tmp_path):
    """A replaced child's files are folded into one per kind, so a server that replaces
    children for months keeps files per live child, not per child it ever had. Not one
    sample moves, not by a float's last bit: the durations' sums, added in another order
    after a fold, could come out lower, which Prometheus reads as a counter's reset."""
    metrics.start(tmp_path)
    try:
        ended = ended_children((3, 4, 5, 6, 7, 8))
        before = exposed()
        assert value(before, "chargebox_http_requests_total", **NOT_FOUND) == 33
        assert value(before, "chargebox_write_batch_size_count") == 6
        for pid in ended:
            metrics.process_ended(pid)
            assert exposed() == before  # exactly
        # Left: this process's own (it counts too, as a server's parent does) and the ended.
        assert {f.name for f in tmp_path.glob("*.db")} == {
            f"{kind}_{pid}.db"
            for kind in ("counter", "histogram")
            for pid in (os.getpid(), metric_files.ENDED)
        }
    finally:
        metrics.stop()


def test_a_fold_never_waits_for_a_scrape_nor_fails_on_a_file_it_cannot_read(tmp_path, caplog):
    """The supervisor folds: it must never hang on a scrape stopped midway, nor end (and
    the service with it) on a file a child killed as it made it left empty. Both leave the
    files to every scrape's sum, and the next ended process folds what can be."""
    metrics.start(tmp_path)
    try:
        first, second = ended_children((3, 4))
        before = exposed()
        scrape = os.open(tmp_path / ".lock", os.O_RDWR)
        fcntl.flock(scrape, fcntl.LOCK_SH)  # a scrape reading the files
        try:
            metrics.process_ended(first)  # returns at once
            assert (tmp_path / f"counter_{first}.db").exists() and exposed() == before
        finally:
            os.close(scrape)
        # Its header says it holds 100 bytes of values; it has none (a disk's damage).
        (tmp_path / "counter_999999.db").write_bytes(struct.pack("i", 100) + bytes(4))
        metrics.process_ended(999999)
        assert not list(tmp_path.glob(f"*_{first}.db"))  # folded with the next ending
        metrics.process_ended(second)
        assert not list(tmp_path.glob(f"*_{second}.db"))
        assert "server process 999999 stay in its own files" in caplog.text
    finally:
        metrics.stop()
        (tmp_path / "counter_999999.db").unlink()


def test_a_file_just_made_fails_no_scrape_and_folds_to_nothing(tmp_path):
    """prometheus-client makes a process's file empty, then sizes it: a scrape in between
    failed on it, and a child killed in between left it so, failing every fold after.
    An empty file holds no values: scrapes sum the others, a fold removes it."""
    metrics.start(tmp_path)
    try:
        (first,) = ended_children((3,))
        before = exposed()
        for kind in ("counter", "histogram"):
            (tmp_path / f"{kind}_999999.db").touch()  # a child's, as it makes it
        assert exposed() == before
        metrics.process_ended(999999)  # killed there
        metrics.process_ended(first)
        assert not list(tmp_path.glob("*_999999.db")) and exposed() == before
        assert {f.name for f in tmp_path.glob("*.db")} == {
            f"{kind}_{pid}.db" for kind in metric_files.SUMMED for pid in (os.getpid(), "ended")
        }
    finally:
        metrics.stop()


def _children(parent: int) -> set[str]:
    """The pids of `parent`'s children now, as strings (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.add(entry)
    return found


def exposed() -> dict:
    """{(sample name, frozenset of labels): value} of this process's exposition."""
    return samples_in(metrics.exposition({"database": 1})[0].decode())


def _metrics_directory(pid: str) -> Path:
    """Where a live child keeps its metrics: the directory of the counts file it maps."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(f"/counter_{pid}.db"):
                return Path(line.split()[-1]).parent
    raise AssertionError(f"process {pid} maps no counts file")


def test_observing_costs_nothing_until_metrics_start_and_routes_become_patterns():
    class Route:
        rule = "/api/credit-requests/<ident:re:[0-9]{1,18}>/approve"

    assert metrics.route_label({"bottle.route": Route()}) == "/api/credit-requests/{ident}/approve"
    assert metrics.route_label({}) == metrics.UNMATCHED
    metrics.stop()
    metrics.observe({}, "GET", 200, 0.01)  # off: nothing to count, nothing raised
    text, kind = metrics.exposition({"database": 4096})
    assert b"chargebox_database_bytes 4096.0" in text and b"http_requests" not in text
    metrics.start()
    try:
        metrics.observe({}, "BREW", 404, 0.01)
        text, _ = metrics.exposition({"database": 1})
    finally:
        metrics.stop()
    assert (
        b'chargebox_http_requests_total{method="other",route="(unmatched)",status="404"} 1.0'
        in (text)
    )


pytestmark = pytest.mark.timeout(300)


def test_a_killed_servers_metrics_directory_is_swept_by_the_next_once_nobody_holds_it(tmp_path):
    """A server with `--processes` killed with SIGKILL left its directory in the temporary
    one for good (three a run of this suite). The next such server removes those nobody
    holds, and only those: not one a live server or its children hold, not one too young
    to be held yet, not an older chargebox's (no `.alive`), not another user's or a link."""

    def left(name: str, age: float = 3600.0) -> Path:
        made = tmp_path / (metric_files.SHARED_PREFIX + name)
        made.mkdir()
        (made / "counter_1.db").write_bytes(b"\0" * 8)
        (made / ".alive").touch()
        os.utime(made, (time.time() - age, time.time() - age))
        return made

    dead, young, held = left("dead"), left("young", age=10.0), left("held")
    older = left("older")
    (older / ".alive").unlink()
    os.utime(older, (time.time() - 3600, time.time() - 3600))
    link = tmp_path / (metric_files.SHARED_PREFIX + "link")
    link.symlink_to(held)
    holder = os.open(held / ".alive", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_SH)
    try:
        metric_files.sweep(tmp_path, time.time())
    finally:
        os.close(holder)
    assert not dead.exists()
    assert young.exists() and held.exists() and older.exists() and link.exists()
    metric_files.sweep(tmp_path, time.time())  # let go now: its server is gone
    assert not held.exists() and young.exists()


def test_a_server_holds_its_metrics_directory_while_it_serves(tmp_path):
    made, alive = metric_files.shared_directory(tmp_path)
    try:
        assert made.name.startswith(metric_files.SHARED_PREFIX) and (made / ".alive").exists()
        metric_files.sweep(made.parent, time.time() + 3600)  # as if it were old
        assert made.exists()
    finally:
        os.close(alive)
    metric_files.sweep(made.parent, time.time() + 3600)
    assert not made.exists()
