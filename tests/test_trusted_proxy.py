"""Behind a TLS-ending reverse proxy (`--trusted-proxy`, chargebox/proxy.py).

A real server is sent what a proxy on 127.0.0.1 would send: with the option, its
`X-Forwarded-Proto: https` makes every cookie `Secure` and its last
`X-Forwarded-For` hop is the client the access log names; a value that is not a
scheme or an address is ignored, never an error. Without the option, or with
another address trusted, the same headers change nothing. The cookies are read
from each answer's `Set-Cookie` and sent back by hand: a client keeps a `Secure`
cookie from plain http to itself.
"""

from __future__ import annotations

import pytest
import requests

from chargebox import proxy
from chargebox.config import Config
from chargebox.web.sessions import HOST_ONLY, LOGIN_COOKIE, SESSION_COOKIE
from tests.support import ADMIN_TOKEN, running_server
from tests.test_access_log import by_id
from tests.test_startup_mistakes import assert_refused, chargebox
from tests.web_support import set_cookies, value_of

HTTPS = {"X-Forwarded-Proto": "https"}


def flags(response, name: str) -> set[str]:
    """The attributes of the cookie `name` that `response` sets, lowered."""
    return {part.strip().lower() for part in set_cookies(response)[name].split(";")[1:]}


def cookie_value(response, name: str) -> str:
    return set_cookies(response)[name].split(";")[0].split("=", 1)[1]


def sign_in(url: str, headers: dict) -> tuple[requests.Response, requests.Response]:
    """The sign-in form, then the admin's sign-in, both with `headers`; the two answers."""
    form = requests.get(url + "/login", headers=headers, timeout=10)
    assert form.status_code == 200, form.text
    (name,) = {LOGIN_COOKIE, HOST_ONLY + LOGIN_COOKIE} & set(set_cookies(form))
    signed = requests.post(
        url + "/login",
        {"token": ADMIN_TOKEN, "csrf": value_of(form.text, "csrf")},
        headers={**headers, "Cookie": f"{name}={cookie_value(form, name)}"},
        allow_redirects=False,
        timeout=10,
    )
    assert signed.status_code == 303, signed.text
    return form, signed


def test_the_trusted_proxys_https_makes_every_cookie_secure_and_its_client_is_logged(tmp_path):
    log = tmp_path / "access.log"
    env = {"CHARGEBOX_TRUSTED_PROXY": "127.0.0.1", "CHARGEBOX_ACCESS_LOG": str(log)}
    with running_server(tmp_path / "proxied.db", env=env) as server:
        form, signed = sign_in(server.url, {**HTTPS, "X-Forwarded-For": "198.51.100.9"})
        session = cookie_value(signed, HOST_ONLY + SESSION_COOKIE)
        pages = {
            name: requests.get(server.url + "/admin", allow_redirects=False, timeout=10,
                               headers={**HTTPS, "Cookie": f"{name}={session}"})
            for name in (HOST_ONLY + SESSION_COOKIE, SESSION_COOKIE)
        }  # fmt: skip
        # What a sibling can make a browser send: its own cookie, whose value (a space in
        # it) reads as ours to a parser that splits at spaces (http.cookies: bottle's).
        smuggled = {
            "session": f"pref=x {HOST_ONLY + SESSION_COOKIE}={session}",
            "twice": f"{HOST_ONLY + SESSION_COOKIE}={session}; {HOST_ONLY + SESSION_COOKIE}=x",
            "login": f"pref=x {HOST_ONLY + LOGIN_COOKIE}=planted-by-a-sibling",
            # A name of its own that str.strip() would make ours (latin-1 0xA0, 0x85).
            "nbsp": f"pref=x; \xa0{HOST_ONLY + SESSION_COOKIE}={session}",
            "beside": f"{HOST_ONLY + SESSION_COOKIE}={session}; \x85{HOST_ONLY + SESSION_COOKIE}=x",
        }
        pages.update({
            name: requests.get(server.url + ("/login" if name == "login" else "/admin"),
                               allow_redirects=False, timeout=10,
                               headers={**HTTPS, "Cookie": cookie})
            for name, cookie in smuggled.items()
        })  # fmt: skip
        plain = requests.get(server.url + "/language/fa?back=/login",
                             headers={"X-Forwarded-Proto": "http"}, allow_redirects=False,
                             timeout=10)  # fmt: skip
        odd = {
            "gopher": requests.get(server.url + "/language/fa?back=/login", timeout=10,
                                   headers={"X-Forwarded-Proto": "gopher",
                                            "X-Forwarded-For": "203.0.113.7, not-an-address"},
                                   allow_redirects=False),
            "spoofed": requests.get(server.url + "/health", timeout=10,
                                    headers={"X-Forwarded-For": '"\\, 10.0.0.1, 203.0.113.7'}),
        }  # fmt: skip
    # Host-only: a sibling subdomain can set neither (a browser refuses it the name).
    assert {"secure", "path=/"} <= flags(form, HOST_ONLY + LOGIN_COOKIE)
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= flags(
        signed, HOST_ONLY + SESSION_COOKIE
    )
    assert not any(part.startswith("domain") for part in flags(signed, HOST_ONLY + SESSION_COOKIE))
    assert LOGIN_COOKIE not in set_cookies(form) and SESSION_COOKIE not in set_cookies(signed)
    # The same session under the name a sibling subdomain could have planted is no session.
    assert pages[HOST_ONLY + SESSION_COOKIE].status_code == 200
    assert pages[SESSION_COOKIE].status_code == 303
    assert pages[SESSION_COOKIE].headers["Location"].endswith("/login")
    assert pages["session"].status_code == 303 and pages["twice"].status_code == 303
    assert pages["nbsp"].status_code == 303
    assert pages["beside"].status_code == 200  # the planted one is another cookie: no lockout
    assert pages["login"].status_code == 200
    assert "planted-by-a-sibling" not in pages["login"].text
    assert value_of(pages["login"].text, "csrf") == cookie_value(
        pages["login"], HOST_ONLY + LOGIN_COOKIE
    )  # a token of its own, set as the host's cookie
    assert "secure" not in flags(plain, "lang")
    assert odd["gopher"].status_code == 303 and "secure" not in flags(odd["gopher"], "lang")
    assert odd["spoofed"].status_code == 200
    clients = {name: by_id(log, answer.headers["X-Request-Id"])["client"]
               for name, answer in {"signed": signed, "plain": plain, **odd}.items()}  # fmt: skip
    # The proxy's own hop is the last one; what a client wrote before it is not believed.
    assert clients == {"signed": "198.51.100.9", "plain": "127.0.0.1",
                       "gopher": "127.0.0.1", "spoofed": "203.0.113.7"}  # fmt: skip


@pytest.mark.parametrize("trusted", [None, "192.0.2.1"], ids=["no-proxy", "another-address"])
def test_forwarding_headers_from_anyone_else_change_nothing(tmp_path, trusted):
    log = tmp_path / "access.log"
    env = {"CHARGEBOX_ACCESS_LOG": str(log)}
    if trusted:
        env["CHARGEBOX_TRUSTED_PROXY"] = trusted
    forged = {**HTTPS, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil.example",
              "Forwarded": "for=203.0.113.7;proto=https"}  # fmt: skip
    with running_server(tmp_path / "direct.db", env=env) as server:
        form, signed = sign_in(server.url, forged)
    assert "secure" not in flags(form, LOGIN_COOKIE) | flags(signed, SESSION_COOKIE)
    assert not any(name.startswith(HOST_ONLY) for name in set_cookies(signed))
    assert by_id(log, signed.headers["X-Request-Id"])["client"] == "127.0.0.1"


def test_the_app_sees_no_forwarding_header_and_no_zone_as_a_client():
    """What the app receives (proxy.forwarded): no forwarding header from anyone, and from
    the proxy only a plain address as the client (an IPv6 zone is any text)."""
    forged = {"HTTP_X_FORWARDED_FOR": "203.0.113.7", "HTTP_X_FORWARDED_PROTO": "https",
              "HTTP_X_FORWARDED_HOST": "evil.example", "HTTP_X_FORWARDED_PORT": "443",
              "HTTP_X_FORWARDED_BY": "x", "HTTP_FORWARDED": "for=203.0.113.7"}  # fmt: skip
    for peer, scheme, client in (("192.0.2.9", "http", "192.0.2.9"),
                                 ("127.0.0.1", "https", "203.0.113.7")):  # fmt: skip
        environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", **forged}
        proxy.forwarded(environ, "127.0.0.1")
        assert environ == {"REMOTE_ADDR": client, "wsgi.url_scheme": scheme}
    zoned = {"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_FOR": "fe80::1%" + "x" * 3000}
    proxy.forwarded(zoned, "::1")
    assert zoned == {"REMOTE_ADDR": "::1"}


def test_a_trusted_proxy_written_ipv4_mapped_is_trusted_as_its_ipv4_peer(tmp_path):
    """`--trusted-proxy ::ffff:127.0.0.1` was kept as `::ffff:7f00:1`, which no peer is
    named, and the proxy silently went untrusted (helper-109). Taken as 127.0.0.1 now,
    and a peer of a dual-stack socket named `::ffff:127.0.0.1` is that proxy too."""
    config = Config(db_path=tmp_path / "cb.db", trusted_proxy="::ffff:127.0.0.1")
    assert config.trusted_proxy == "127.0.0.1"
    for peer in ("127.0.0.1", "::ffff:127.0.0.1"):
        environ = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
        proxy.forwarded(environ, config.trusted_proxy)
        assert environ == {"REMOTE_ADDR": "203.0.113.7"}, peer
    other = {"REMOTE_ADDR": "::ffff:127.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    proxy.forwarded(other, config.trusted_proxy)
    assert other == {"REMOTE_ADDR": "::ffff:127.0.0.2"}


@pytest.mark.parametrize("value", ["nginx", "127.0.0.1/8", "*"])
def test_a_trusted_proxy_that_is_not_one_address_is_refused_at_start(tmp_path, value):
    refused = chargebox("serve", "--port", "0", "--db", str(tmp_path / "cb.db"),
                        "--trusted-proxy", value)  # fmt: skip
    assert_refused(refused, "--trusted-proxy", repr(value))
    assert list(tmp_path.iterdir()) == []  # nothing made
