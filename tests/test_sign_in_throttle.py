"""Failed sign-ins on the web form are throttled per client address (web/throttle.py).

The counting is checked with a clock the test moves (no waiting); the page against a
real server behind `--trusted-proxy`, so that each test's clients have addresses of
their own (documentation ranges) and the shared servers' 127.0.0.1 is never throttled.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import threading
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import requests

from chargebox.cli import prepare
from chargebox.config import Config
from chargebox.services import Chargebox
from chargebox.web import create_app
from chargebox.web.request import FORM_TYPE
from chargebox.web.throttle import FAILURES, SignInThrottle, client_of
from tests.support import ADMIN_TOKEN, running_server
from tests.web_support import set_cookies, text_of, value_of

SESSION = "chargebox_session"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_after_its_failures_until_its_window_ends():
    clock = Clock()
    throttle = SignInThrottle(failures=3, window_s=600, clock=clock)
    for _ in range(3):
        assert throttle.wait("203.0.113.7") == 0
        throttle.failed("203.0.113.7")
        clock.now += 10
    assert throttle.wait("203.0.113.7") == 570  # 600 s from its first failure
    assert throttle.wait("203.0.113.8") == 0  # another address is not held back
    clock.now += 569.5
    assert throttle.wait("203.0.113.7") == 1  # whole seconds, rounded up
    clock.now += 0.5
    assert throttle.wait("203.0.113.7") == 0
    throttle.failed("203.0.113.7")  # a new window: one failure is not enough
    assert throttle.wait("203.0.113.7") == 0


def test_sign_ins_checked_at_once_count_among_the_failures_before_they_fail():
    """Sign-ins sent together all passed `wait` before any of them had failed: 15 of 40
    were checked where 10 may be (helper-109). Each in flight counts; one past them
    waits a second, and an attempt that ends (passed, or its failure counted) frees it."""
    clock = Clock()
    throttle = SignInThrottle(failures=3, window_s=600, clock=clock)
    address = "203.0.113.7"
    throttle.failed(address)
    with contextlib.ExitStack() as flight:
        waits = [flight.enter_context(throttle.attempt(address)) for _ in range(3)]
        assert waits == [(0, False), (0, False), (1, True)]  # one failed, two in flight
        assert flight.enter_context(throttle.attempt("203.0.113.8")) == (0, False)  # its own
        assert throttle.wait(address) == 0  # nothing has failed twice yet
    with throttle.attempt(address) as (wait, _):  # the two ended without failing: freed
        assert wait == 0
        throttle.failed(address)
    with throttle.attempt(address) as (wait, _):
        assert wait == 0
        throttle.failed(address)
    with throttle.attempt(address) as answer:
        assert answer == (600, False)  # three failures: the window's wait, not a second's
    assert throttle._trying == {}  # nothing left counted in flight


def test_the_failure_that_closes_an_address_s_sign_ins_is_logged_once(caplog):
    """Behind a proxy not named with --trusted-proxy every visitor shares one address, and
    one person's wrong keys close the page to all: the operator must be able to see it."""
    clock = Clock()
    throttle = SignInThrottle(failures=3, window_s=600, clock=clock)
    with caplog.at_level(logging.WARNING, logger="chargebox.auth"):
        for _ in range(5):
            throttle.failed("203.0.113.7")
            clock.now += 10
    said = [record.getMessage() for record in caplog.records]
    assert said == ["sign-ins from 203.0.113.7 refused for up to 580 s: 3 wrong keys"]


def test_failures_spread_over_more_than_the_window_are_never_refused():
    clock = Clock()
    throttle = SignInThrottle(failures=3, window_s=600, clock=clock)
    for _ in range(20):
        throttle.failed("203.0.113.7")
        clock.now += 301
        assert throttle.wait("203.0.113.7") == 0


def test_the_addresses_remembered_are_bounded_the_oldest_failure_forgotten_first():
    clock = Clock()
    throttle = SignInThrottle(failures=2, window_s=600, addresses=100, clock=clock)
    throttle.failed("203.0.113.7")
    throttle.failed("203.0.113.7")
    for host in range(5000):  # many addresses, one failure each
        throttle.failed(f"10.{host // 250}.{host % 250}.1")
        assert len(throttle) <= 100
    assert throttle.wait("203.0.113.7") == 0  # forgotten: the oldest
    throttle.failed("203.0.113.9")
    throttle.failed("203.0.113.9")
    assert throttle.wait("203.0.113.9") == 600  # the newest are remembered


def test_an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_as_ipv4():
    assert client_of("2001:db8:1:2:aaaa::1") == client_of("2001:db8:1:2:bbbb::9")
    assert client_of("2001:db8:1:2::1") != client_of("2001:db8:1:3::1")
    assert client_of("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_of("not an address") == "not an address"
    throttle = SignInThrottle(failures=1)
    throttle.failed("2001:db8:1:2::1")
    assert throttle.wait("2001:db8:1:2::ffff") > 0


def sign_in(url: str, client: str, token: str) -> requests.Response:
    """The sign-in form, then a sign-in with `token`, from `client` (as the proxy says)."""
    through = {"X-Forwarded-For": client}
    form = requests.get(url + "/login", headers=through, timeout=10)
    assert form.status_code == 200, form.text
    return requests.post(
        url + "/login",
        {"token": token, "csrf": value_of(form.text, "csrf")},
        headers=through,
        cookies=form.cookies,
        allow_redirects=False,
        timeout=10,
    )


def test_too_many_failed_sign_ins_from_an_address_are_a_429_that_checks_no_token(tmp_path):
    """It had no throttle: every wrong key was checked and answered 401, without end."""
    env = {"CHARGEBOX_TRUSTED_PROXY": "127.0.0.1"}
    with running_server(tmp_path / "throttled.db", env=env) as server:
        for _ in range(3):  # an empty field is not counted
            assert sign_in(server.url, "203.0.113.7", "  ").status_code == 401
        for _ in range(FAILURES):
            assert sign_in(server.url, "203.0.113.7", "cbk_" + "W" * 43).status_code == 401
        refused = sign_in(server.url, "203.0.113.7", ADMIN_TOKEN)  # even the right token
        elsewhere = sign_in(server.url, "198.51.100.9", ADMIN_TOKEN)
    assert refused.status_code == 429, refused.text
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    assert refused.headers["Content-Type"].startswith("text/html")
    said = text_of(refused.text, "login-token-error")
    assert said == (
        "Too many failed sign-ins from your address: try again in "
        f"{int(refused.headers['Retry-After']):,} seconds"
    )
    assert ADMIN_TOKEN not in refused.text and SESSION not in set_cookies(refused)
    assert elsewhere.status_code == 303 and SESSION in set_cookies(elsewhere)


def test_sign_ins_past_the_limit_at_once_are_told_to_wait_a_second_not_that_they_failed(
    tmp_path, monkeypatch
):
    """FAILURES sign-ins being checked at once from one address: the next is a 429 that
    says so (in the page's language) and waits a second; "too many failed sign-ins" was
    said though none had failed (helper-112). Once they fail, the window's wait is said."""
    service = Chargebox(prepare(Config(db_path=tmp_path / "at-once.db", admin_token=ADMIN_TOKEN)))
    app = create_app(service.config, service)
    inside, release = threading.Semaphore(0), threading.Event()
    checked = service.access.sign_in

    def held(token):  # each waits inside its check, counted in flight
        inside.release()
        assert release.wait(30)
        return checked(token)

    monkeypatch.setattr(service.access, "sign_in", held)
    login = secrets.token_urlsafe(24)

    def post(language: str = "en") -> tuple[str, dict, str]:
        body = urlencode({"token": "cbk_" + "W" * 43, "csrf": login}).encode()
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/login", "CONTENT_TYPE": FORM_TYPE,
                   "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                   "HTTP_COOKIE": f"chargebox_login={login}", "HTTP_ACCEPT_LANGUAGE": language,
                   "REMOTE_ADDR": "203.0.113.7"}  # fmt: skip
        setup_testing_defaults(environ)
        answered = {}
        page = b"".join(app(environ, lambda status, sent, *_: answered.update(s=status, h=sent)))
        return answered["s"], dict(answered["h"]), page.decode()

    flight = [threading.Thread(target=post) for _ in range(FAILURES)]
    try:
        for thread in flight:
            thread.start()
        for _ in flight:
            assert inside.acquire(timeout=30)
        status, sent, page = post()
        assert status.startswith("429") and sent["Retry-After"] == "1"
        assert "Too many sign-ins at once from your address: try again in a second" in page
        status, _, page = post("fa")
        assert status.startswith("429") and "ورودهای هم" in page
    finally:
        release.set()
        for thread in flight:
            thread.join(30)
    status, sent, page = post()
    assert status.startswith("429") and int(sent["Retry-After"]) > 500
    assert "Too many failed sign-ins" in page
    service.close()
