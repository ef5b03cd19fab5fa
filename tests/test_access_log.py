"""The access log (issue 14, item 5): one line per request, no secret in it, and
`X-Request-Id` on every answer, also those waitress makes itself.

Real servers on both backends write to a file (`CHARGEBOX_ACCESS_LOG`); each line
is parsed by a strict pattern of the documented format, so a line broken by a
forged newline, a secret in any field, or two processes' lines mixed would fail it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from chargebox import access_log
from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    Api,
    exchange,
    new_seller,
    running_server,
    write_lock_held,
)
from tests.web_support import Browser

LINE = re.compile(
    r"time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z id=(?P<id>[A-Za-z0-9._-]{1,64}) "
    r"method=(?P<method>[!-~]+) path=(?P<path>[!-~]+) status=(?P<status>\d{3}) "
    r"duration_ms=(?P<ms>\d+\.\d\d) seller=(?P<seller>\d+|admin|-) "
    r"client=(?P<client>[!-~]+) pid=(?P<pid>\d+)(?P<cut> cut=1)?"
)
PHONE = "09121234567"


def logged(path) -> list[dict]:
    """Every line of the log, each required to match the format in full."""
    text = path.read_text("ascii")
    assert text.endswith("\n") or not text
    lines = text.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    return [match.groupdict() for match in parsed]


def by_id(path, ident: str) -> dict:
    (found,) = [entry for entry in logged(path) if entry["id"] == ident]
    return found


def test_a_line_names_the_request_and_holds_none_of_its_secrets(tmp_path, new_server):
    log = tmp_path / "access.log"
    with new_server(tmp_path, env={"CHARGEBOX_ACCESS_LOG": str(log)}) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "logged", credit=50_000)
        own = server.seller(key)
        own.session.cookies.set("chargebox_session", "cookie-secret-0123456789")
        sale = own.post(
            f"/api/sales?api_key={key}&token={ADMIN_TOKEN}&secret=query-secret-42",
            {"phone": PHONE, "amount": 1000},
        )
        odd = own.get(f"/api/%0D%0Aforged=1 status=200/\x1b[31m/{key}/%E2%80%AEevil")
        pasted = admin.get(f"/api/{ADMIN_TOKEN}/sellers")  # a token pasted into the path
        listed = admin.get("/api/sellers?limit=5")
        admin.close()
        own.close()
    text = log.read_text("ascii")
    for secret in (key, key[4:], ADMIN_TOKEN, "cookie-secret", "query-secret", "api_key"):
        assert secret not in text
    sold = by_id(log, sale.headers["X-Request-Id"])
    assert sale.status_code == 201  # the query is ignored by the route, and never logged
    assert sold["method"] == "POST" and sold["path"] == "/api/sales"
    assert sold["seller"] == str(seller["id"]) and sold["status"] == "201"
    weird = by_id(log, odd.headers["X-Request-Id"])
    assert odd.status_code == 404 and weird["seller"] == "-"  # no route: nobody authenticated
    assert weird["path"] == (
        "/api/%0D%0Aforged%3D1%20status%3D200/%1B[31m/cbk_[redacted]/%E2%80%AEevil"
    )
    assert by_id(log, pasted.headers["X-Request-Id"])["path"] == "/api/[redacted]/sellers"
    admins = by_id(log, listed.headers["X-Request-Id"])
    assert admins["seller"] == "admin" and admins["path"] == "/api/sellers"
    assert float(admins["ms"]) > 0


def test_every_kind_of_answer_carries_a_request_id_that_its_line_repeats(tmp_path, new_server):
    log = tmp_path / "access.log"
    with new_server(tmp_path, env={"CHARGEBOX_ACCESS_LOG": str(log)}) as server:
        anonymous, admin = Api(server.url), server.admin()
        _, key = new_seller(admin, "ids", credit=10_000)
        own = server.seller(key)
        answers = {
            200: anonymous.get("/health"),
            201: own.post("/api/sales", {"phone": PHONE, "amount": 100}),
            401: anonymous.get("/api/me"),
            403: own.get("/api/sellers"),
            404: anonymous.get("/no/such/route"),
            405: admin.request("DELETE", "/api/sellers"),
            409: own.post("/api/sales", {"phone": PHONE, "amount": 10**9}),
            413: own.post("/api/sales", {"phone": PHONE, "amount": 1, "x": "y" * 70_000}),
            422: own.post("/api/sales", {"phone": "123", "amount": 100}),
        }
        page = anonymous.get("/nowhere", headers={"Accept": "text/html"})
        signin = anonymous.get("/login")
        chosen = anonymous.get("/health", headers={"X-Request-Id": "proxy-id.42_A"})
        unsafe = anonymous.get("/health", headers={"X-Request-Id": "bad id\tx"})
        repeated = exchange(server.url, b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        for api in (anonymous, admin, own):
            api.close()
    seen = set()
    for status, response in {**answers, "page": page, "login": signin}.items():
        assert response.status_code == (404 if status == "page" else 200 if status == "login"
                                        else status), (status, response.text)  # fmt: skip
        ident = response.headers["X-Request-Id"]
        assert by_id(log, ident)["status"] == str(response.status_code)
        seen.add(ident)
    assert len(seen) == len(answers) + 2  # one id each
    assert page.headers["Content-Type"].startswith("text/html")
    assert chosen.headers["X-Request-Id"] == "proxy-id.42_A"
    assert by_id(log, "proxy-id.42_A")["path"] == "/health"
    assert unsafe.headers["X-Request-Id"] != "bad id\tx"
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", unsafe.headers["X-Request-Id"])
    head, _, _ = repeated.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    (ident,) = re.findall(rb"\r\nX-Request-Id: ([^\r]+)", head)
    assert by_id(log, ident.decode())["status"] == "400"


def test_a_503_carries_its_request_id_and_is_logged(tmp_path):
    """SQLite only: another connection holds the write lock past a 0.3 s busy timeout."""
    log = tmp_path / "access.log"
    db = tmp_path / "cb.db"
    env = {"CHARGEBOX_ACCESS_LOG": str(log), "CHARGEBOX_BUSY_TIMEOUT_MS": "300"}
    with running_server(db, env=env) as server:
        admin = server.admin()
        _, key = new_seller(admin, "busy", credit=10_000)
        with write_lock_held(db):
            refused = server.seller(key).post("/api/sales", {"phone": PHONE, "amount": 100})
        admin.close()
    assert refused.status_code == 503, refused.text
    entry = by_id(log, refused.headers["X-Request-Id"])
    assert entry["status"] == "503" and float(entry["ms"]) >= 250


def test_two_processes_append_whole_lines_to_one_file(tmp_path, new_server):
    """Many concurrent requests with long paths against `--processes 2`: every line of the
    file parses, each request id appears once, and both processes wrote lines."""
    log = tmp_path / "access.log"
    long_path = "/x" * 600  # a line over 1 KiB: a split write would show as a broken line
    env = {"CHARGEBOX_ACCESS_LOG": str(log), "CHARGEBOX_PROCESSES": "2"}
    with new_server(tmp_path, env=env) as server:

        def one(_: int) -> str:
            # A new connection each time, so that the kernel spreads them over both.
            response = requests.get(server.url + long_path, timeout=30)
            assert response.status_code == 404
            return response.headers["X-Request-Id"]

        ids: list[str] = []
        deadline = time.monotonic() + 60
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            while time.monotonic() < deadline:
                ids += pool.map(one, range(400))
                if len({entry["pid"] for entry in logged(log)}) == 2:
                    break
    entries = logged(log)
    assert len({entry["pid"] for entry in entries}) == 2, "one process served every request"
    mine = [entry for entry in entries if entry["path"].startswith("/x/x")]
    assert sorted(entry["id"] for entry in mine) == sorted(ids)
    assert all(entry["path"] == long_path[: access_log.MAX_PATH] + "..." for entry in mine)


def test_the_supervisor_of_processes_lets_a_rotated_log_go(tmp_path, new_server):
    """The parent of `--processes 2` never writes a line: it held the first file open for
    good, so a rotated and deleted log's space stayed in use until a restart."""
    log, rotated = tmp_path / "access.log", tmp_path / "access.log.1"
    env = {"CHARGEBOX_ACCESS_LOG": str(log), "CHARGEBOX_PROCESSES": "2"}
    with new_server(tmp_path, env=env) as server:
        parent = server.proc.pid

        def holds(path) -> bool:
            fds = f"/proc/{parent}/fd"
            return str(path) in {os.readlink(f"{fds}/{n}") for n in os.listdir(fds)}

        assert holds(log)
        log.rename(rotated)
        deadline = time.monotonic() + 10
        while holds(rotated) and time.monotonic() < deadline:
            time.sleep(0.1)  # its check comes within a second (REOPEN_CHECK_S)
        assert not holds(rotated) and holds(log)  # which its next children inherit


def test_off_writes_no_line_and_stderr_is_the_default(tmp_path, new_server):
    (tmp_path / "off").mkdir()
    (tmp_path / "default").mkdir()
    with new_server(tmp_path / "off", env={"CHARGEBOX_ACCESS_LOG": "off"}) as quiet:
        answered = requests.get(quiet.url + "/health", timeout=10)
        assert "X-Request-Id" in answered.headers  # the id does not depend on the log
    with new_server(tmp_path / "default") as loud:
        spoken = requests.get(loud.url + "/health", timeout=10)
    assert " id=" not in quiet.log_path.read_text()
    said = [line for line in loud.log_path.read_text().splitlines() if line.startswith("time=")]
    assert any(f" id={spoken.headers['X-Request-Id']} " in line for line in said), said
    assert all(LINE.fullmatch(line) for line in said)


def test_a_streamed_answer_is_logged_as_it_ends_and_one_cut_short_says_so(tmp_path):
    """A statement is sent as it is read: its line, and its latency for the metrics, come
    when the server closes it, once, timed to then; sent whole, or not (`cut=1`)."""
    path, observed = tmp_path / "access.log", []

    def streaming(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/csv")])
        return (piece for piece in (b"opening\r\n", b"entry\r\n"))  # not a list: a stream

    app = access_log.AccessLog(streaming, access_log.LogFile(str(path)),
                               lambda environ, method, status, s: observed.append(s))  # fmt: skip
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/statements"}
    whole = app(dict(environ), lambda status, headers, exc_info=None: None)
    assert path.read_text() == "" and observed == []  # nothing sent yet
    for _ in whole:
        time.sleep(0.03)  # a slow client reading its download
    whole.close()
    cut = app(dict(environ), lambda status, headers, exc_info=None: None)
    next(iter(cut))  # then the client goes away, or the database fails the next chunk
    cut.close()
    cut.close()  # a second close writes no second line
    lines = logged(path)
    assert [(line["status"], line["cut"]) for line in lines] == [("200", None), ("200", " cut=1")]
    assert float(lines[0]["ms"]) >= 60 and observed[0] >= 0.06 and len(observed) == 2


def test_a_moved_log_file_is_reopened_so_that_rotation_needs_no_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(access_log, "REOPEN_CHECK_S", 0.0)
    path = tmp_path / "access.log"
    log = access_log.LogFile(str(path))
    log.write(b"first\n")
    path.rename(tmp_path / "access.log.1")
    log.write(b"second\n")
    assert (tmp_path / "access.log.1").read_bytes() == b"first\n"
    assert path.read_bytes() == b"second\n"


def test_a_log_file_made_under_a_strict_umask_is_0640_as_readme_says(tmp_path, monkeypatch):
    """The systemd unit's UMask=0077 made it 0600 (helper-138): one made by rotation too,
    and one there already keeps the mode it has."""
    monkeypatch.setattr(access_log, "REOPEN_CHECK_S", 0.0)
    path = tmp_path / "access.log"
    old = os.umask(0o077)
    try:
        log = access_log.LogFile(str(path))
        log.write(b"first\n")
        path.rename(tmp_path / "access.log.1")
        log.write(b"second\n")
        kept = tmp_path / "kept.log"
        kept.touch(mode=0o600)
        access_log.LogFile(str(kept)).write(b"line\n")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "access.log.1").stat().st_mode & 0o777 == 0o640
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.read_bytes() == b"line\n"


def test_lines_a_full_disk_drops_are_said_once_and_counted_when_it_can_write_again(
    tmp_path, monkeypatch, caplog
):
    """The request is answered all the same; the log said nothing of the lines it lost
    (helper-125). Here the file is /dev/full (every write: ENOSPC), then a new file."""
    monkeypatch.setattr(access_log, "REOPEN_CHECK_S", 0.0)
    path = tmp_path / "access.log"
    path.symlink_to("/dev/full")
    log = access_log.LogFile(str(path))
    with caplog.at_level(logging.WARNING, logger="chargebox.server"):
        for n in range(3):
            log.write(f"lost {n}\n".encode())
        path.unlink()  # rotated: the next write opens a file that has room
        log.write(b"kept\n")
        log.write(b"kept too\n")
    assert path.read_bytes() == b"kept\nkept too\n"
    assert [record.getMessage() for record in caplog.records] == [
        f"the access log ({path}) cannot be written: No space left on device; its lines are"
        " dropped until it can",
        f"the access log ({path}) is written again; 3 line(s) were dropped",
    ]


def test_an_access_log_that_cannot_be_opened_is_refused_at_start_before_any_file(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "access.log"
    with pytest.raises(ValueError, match="--access-log .*access.log: No such file"):
        access_log.LogFile(str(target))
    refused = subprocess.run(
        [sys.executable, "-m", "chargebox.cli", "serve", "--port", "0", "--db",
         str(tmp_path / "cb.db"), "--access-log", str(target)],
        cwd=ROOT, env={**os.environ, "CHARGEBOX_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "--access-log" in refused.stderr
    assert list(tmp_path.iterdir()) == []  # no database, token or key made


def test_a_signed_in_page_is_logged_with_its_seller_and_never_its_session(tmp_path, new_server):
    log = tmp_path / "access.log"
    with new_server(tmp_path, env={"CHARGEBOX_ACCESS_LOG": str(log)}) as server:
        admin = server.admin()
        seller, key = new_seller(admin, "browser", credit=10_000)
        admin.close()
        browser = Browser(server.url)
        assert browser.sign_in(key).status_code == 303
        page = browser.get("/seller")
        session = browser.http.cookies["chargebox_session"]
        browser.http.close()
    assert page.status_code == 200
    entry = by_id(log, page.headers["X-Request-Id"])
    assert entry["seller"] == str(seller["id"]) and entry["path"] == "/seller"
    text = log.read_text("ascii")
    assert session not in text and key not in text and browser.token not in text


def test_a_forked_processs_first_requests_on_many_threads_each_get_an_id():
    """After a fork the first ids are made afresh, and a child's first requests come on
    several threads at once: none may see a new pid before its prefix (that was a 500
    under `--processes 2` in the crash test). 200 rounds of 8 threads released together
    on a fresh id maker, thread switches forced often; every id is made, and unique."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            ids = access_log._Ids()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                barrier = threading.Barrier(8)

                def first_request(ids=ids, barrier=barrier) -> str:
                    barrier.wait(10)
                    return ids.new()

                made = [pool.submit(first_request) for _ in range(8)]
                found = [future.result(10) for future in made]
            assert len(set(found)) == 8
    finally:
        sys.setswitchinterval(old)


# An admin token may hold any visible ASCII (config.checked_admin_token), `/` too: pasted
# into a path, it is split into segments each shorter than the length rule's 32.
SLASHED = "tok/en-with/many/short/pieces-0123"


@pytest.fixture
def known(monkeypatch):
    """A fresh set of known tokens for the test (keep_out is for the process's life)."""
    monkeypatch.setattr(access_log, "_known", access_log._Known())


@pytest.mark.parametrize(
    ("token", "path", "logged_as"),
    [
        (SLASHED, f"/api/sellers/{SLASHED}", "/api/sellers/[redacted]"),
        (SLASHED, f"/{SLASHED}/{SLASHED}x", "/[redacted]/[redacted]x"),
        # a `?` in the token: the rest went into the query string, which is never logged
        ("tok/en-with?the-rest/in-the-query", "/api/tok/en-with", "/api/[redacted]"),
        # its %XX as the server decodes them, or as sent (a client that encoded the `%`)
        ("pct%41/a/b/c/d/e/f/g/h/i/j/k/l/m", "/pctA/a/b/c/d/e/f/g/h/i/j/k/l/m", "/[redacted]"),
        ("pct%41/a/b/c/d/e/f/g/h/i/j/k/l/m", "/pct%41/a/b/c/d/e/f/g/h/i/j/k/l/m", "/[redacted]"),
    ],
)
def test_a_known_admin_token_holding_a_slash_is_cut_out_of_a_logged_path_whole(
    known, token, path, logged_as
):
    """The length rule saw only segments shorter than 32 characters and logged the token."""
    access_log.keep_out(token)
    assert access_log.without_secrets(path) == logged_as


@pytest.mark.parametrize(
    "path",
    [
        "/api/sellers/123456789012345678/keys/123456789012345678/rotate",
        "/admin/sellers/5/adjustments",
        "/static/vazirmatn-nl-33.0.3.woff2",
        "/tok/en-with/many/short",  # a piece of a known token, not the token
    ],
)
def test_ordinary_paths_are_logged_as_they_are_beside_known_tokens(known, path):
    access_log.keep_out(SLASHED)
    assert access_log.without_secrets(path) == path


def test_an_admin_token_rotated_in_is_kept_out_of_the_log_once_it_is_accepted(known, service):
    """A token another host rotated in is known here only by its hash, until it is used."""
    from chargebox import auth

    rotated = "rotated/in/elsewhere/0123456789-abcdef"
    auth.rotate_admin(service.database, rotated)
    path = f"/api/{rotated}/sellers"
    assert service.access.authenticate(f"Bearer {rotated}") == auth.ADMIN
    assert access_log.without_secrets(path) == "/api/[redacted]/sellers"


def test_a_configured_admin_token_holding_slashes_never_reaches_the_log(tmp_path, new_server):
    log = tmp_path / "access.log"
    token = "e2e/slashed/admin/token/0123456789"
    env = {"CHARGEBOX_ACCESS_LOG": str(log)}
    with new_server(tmp_path, admin_token=token, env=env) as server:
        admin = Api(server.url, token)
        assert admin.get("/api/sellers").status_code == 200
        pasted = admin.get(f"/api/{token}/sellers")  # a token pasted into the path
        admin.close()
    assert pasted.status_code == 404
    assert by_id(log, pasted.headers["X-Request-Id"])["path"] == "/api/[redacted]/sellers"
    text = log.read_text("ascii")
    assert "slashed" not in text and "0123456789" not in text
