"""The HTML pages against a real server process, spoken to as a browser would (`requests`).

Covers sign-in and sign-out (cookie flags, the login form's double-submit token,
server-side session deletion), CSRF and roles on every page route, security
headers and 4xx pages instead of 500s; the forms themselves are in
test_web_forms.py. A refusal is checked to change nothing with `db_snapshot`.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

import pytest

from chargebox.config import Config
from chargebox.web import create_app
from tests.support import ADMIN_TOKEN, db_snapshot
from tests.web_support import (
    ADMIN,
    SELLER,
    TIMEOUT,
    World,
    refused,
    set_cookies,
    text_of,
    value_of,
)

SESSION, LOGIN, PHONE = "chargebox_session", "chargebox_login", "09121234567"
PAGE_ROUTES = """
    GET /           GET /static/{name}     GET /login       POST /login      POST /logout
    GET /language/{code}
    GET /seller     POST /seller/sales     POST /seller/credit-requests
    GET /seller/statement   GET /seller/sales/found   GET /admin/sellers/{ident}/statement
    GET /admin      POST /admin/sellers    GET /admin/sellers/{ident}        GET /admin/audit
    POST /admin/sellers/{ident}/adjustments      POST /admin/credit-requests/{ident}/{decision}
    POST /admin/sellers/{ident}/{change}         POST /admin/sellers/{ident}/keys
    POST /admin/sellers/{ident}/keys/{key_id}/{change}
    GET /admin/sales/{ident}/refund              POST /admin/sales/{ident}/refund
    GET /admin/charts       GET /seller/charts
"""
# Every POST of a signed-in page, with a form it would accept: (name, role, path, fields).
POSTS = [
    ("sell", SELLER, "/seller/sales", {"phone": PHONE, "amount": "1000"}),
    ("request credit", SELLER, "/seller/credit-requests", {"amount": "5000"}),
    ("create seller", ADMIN, "/admin/sellers", {"name": "sweep"}),
    ("adjust", ADMIN, "/admin/sellers/{seller}/adjustments", {"amount": "-700", "reason": "r"}),
    ("approve", ADMIN, "/admin/credit-requests/{request}/approve", {}),
    ("reject", ADMIN, "/admin/credit-requests/{request}/reject", {}),
    ("suspend", ADMIN, "/admin/sellers/{seller}/suspend", {}),
    ("make a key", ADMIN, "/admin/sellers/{seller}/keys", {"label": "sweep"}),
    ("revoke a key", ADMIN, "/admin/sellers/{seller}/keys/{key}/revoke", {}),
    ("refund a sale", ADMIN, "/admin/sales/{sale}/refund", {"reason": "sweep"}),
    ("seller signs out", SELLER, "/logout", {}),
    ("admin signs out", ADMIN, "/logout", {}),
]
GETS = {
    SELLER: ["/seller", "/seller/statement?day=2026-12-01", "/seller/sales/found?phone=0912",
             "/seller/charts"],
    ADMIN: ["/admin", "/admin/sellers/{seller}", "/admin/audit", "/admin/sales/{sale}/refund",
            "/admin/sellers/{seller}/statement?month=2026-12", "/admin/charts"],
}  # fmt: skip


def page_routes() -> set[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Config(db_path=Path(tmp) / "r.db", admin_token=ADMIN_TOKEN))
        return {
            (route.method, re.sub(r"<(\w+)[^>]*>", r"{\1}", route.rule))
            for route in app.routes
            if route.method != "HEAD" and route.app is not app
        }


def pattern(path: str) -> str:
    changes = r"/(approve|reject|suspend|reactivate|revoke|rotate)$"
    return re.sub(r"\{\w+\}", "{}", re.sub(changes, "/{}", path))


def test_every_page_route_is_classified_and_every_post_is_swept():
    assert page_routes() == set(re.findall(r"(GET|POST) (\S+)", PAGE_ROUTES))
    swept = {pattern(path) for *_, path, _ in POSTS} | {"/login"}
    assert swept == {pattern(path) for method, path in page_routes() if method == "POST"}


# --- signing in and out ----------------------------------------------------------------------


def test_signing_in_sets_an_httponly_strict_session_cookie_and_lands_on_the_role_home(world):
    for role, home in ((ADMIN, "/admin"), (SELLER, "/seller")):
        browser = world.browser()
        answer = browser.sign_in(ADMIN_TOKEN if role == ADMIN else world.key)
        assert (answer.status_code, answer.headers["Location"]) == (303, home)
        flags = [part.strip().lower() for part in set_cookies(answer)[SESSION].split(";")]
        assert {"httponly", "samesite=strict", "path=/"} <= set(flags), flags
        assert browser.get("/").headers["Location"] == home
        assert browser.get("/login").headers["Location"] == home
        assert browser.get(home).status_code == 200


def test_a_wrong_key_is_a_401_page_in_plain_words_that_never_echoes_the_key(world, server):
    secret = "cbk_" + "W" * 43
    answer = refused(server, 401, world.browser().sign_in, secret)
    assert text_of(answer.text, "login-token-error") == "That key is not known. Check it."
    assert secret not in answer.text and value_of(answer.text, "login-token") == ""
    assert SESSION not in set_cookies(answer)


@pytest.mark.parametrize("csrf", [False, "", "forged-token", None])
def test_signing_in_without_the_login_forms_token_is_403_and_opens_no_session(world, csrf):
    browser = world.browser()
    page = browser.get("/login").text  # sets the login cookie, whose copy the form holds
    if csrf is None:  # a cross-site form: the right token, but no login cookie sent with it
        csrf = value_of(page, "csrf")
        browser.http.cookies.clear()
    answer = refused(world.server, 403, browser.post_form, "/login", {"token": world.key}, csrf)
    assert SESSION not in set_cookies(answer) and text_of(answer.text, "error-message")


@pytest.mark.parametrize("planted", ["a,b", 'x"y', "a b", "t" * 31, "t" * 33])
def test_a_login_cookie_not_of_our_shape_is_replaced_not_sent_back_quoted(world, planted):
    """The form reused any login cookie of up to 64 characters and sent it back; bottle
    quoted one such as `a,b`, the form held it unquoted, and the next sign-in was a 403,
    each visit quoting it again (helper-109). Only a token of ours is reused now."""
    page = world.browser().http.get(
        world.server.url + "/login", headers={"Cookie": f"{LOGIN}={planted}"}
    )
    token = value_of(page.text, "csrf")
    assert token != planted and re.fullmatch(r"[A-Za-z0-9_-]{32}", token), token
    assert set_cookies(page)[LOGIN].split(";")[0] == f"{LOGIN}={token}"
    again = world.browser().http.get(
        world.server.url + "/login", headers={"Cookie": f"{LOGIN}={token}"}
    )
    assert value_of(again.text, "csrf") == token  # ours: kept


@pytest.mark.parametrize("sent_from", ["cross-site", "same-site", "Cross-Site "])
def test_a_form_the_browser_says_another_site_sent_is_403_even_with_a_matching_token(
    world, sent_from
):
    """A sibling subdomain (or anyone on plain http) can plant the login cookie and
    post its copy: the sign-in token's double submit alone would take it."""
    browser = world.browser()
    browser.http.cookies.set(LOGIN, "planted-by-another-site")
    browser.http.headers["Sec-Fetch-Site"] = sent_from
    answer = refused(
        world.server,
        403,
        browser.post_form,
        "/login",
        {"token": world.key},
        "planted-by-another-site",
    )
    assert SESSION not in set_cookies(answer)
    you = world.browser(SELLER)
    you.http.headers["Sec-Fetch-Site"] = sent_from
    answer = refused(world.server, 403, you.post_form, "/seller/credit-requests", {"amount": "9"})
    assert "did not come from this site" in text_of(answer.text, "error-message")
    for own in ("same-origin", "none"):  # its own page's form, or typed in
        browser.http.headers["Sec-Fetch-Site"] = own
        signed = browser.post_form("/login", {"token": world.key}, "planted-by-another-site")
        assert signed.status_code == 303, signed.text


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_over_http_a_form_from_another_origin_is_403_when_no_sec_fetch_site_says(world, origin):
    """Browsers too old to send Sec-Fetch-Site send Origin: a sign-in cookie planted by a
    sibling over plain http, posted from its page, signed the victim in as the attacker
    (login CSRF, helper-136). Its own page's form (its own Origin, or none) still signs in."""
    browser = world.browser()
    browser.http.cookies.set(LOGIN, "planted-by-another-site")
    browser.http.headers["Origin"] = origin
    answer = refused(
        world.server, 403, browser.post_form, "/login", {"token": world.key},
        "planted-by-another-site",
    )  # fmt: skip
    assert SESSION not in set_cookies(answer)
    you = world.browser(SELLER)
    you.http.headers["Origin"] = origin
    answer = refused(world.server, 403, you.post_form, "/seller/credit-requests", {"amount": "9"})
    assert "did not come from this site" in text_of(answer.text, "error-message")
    for own in (world.server.url, world.server.url.upper(), None):
        browser.http.headers["Origin"] = own
        signed = browser.post_form("/login", {"token": world.key}, "planted-by-another-site")
        assert signed.status_code == 303, signed.text


def test_a_path_that_is_not_utf8_is_400_not_the_page_its_other_bytes_spell(world):
    """bottle dropped the bytes it could not decode: /adm%FFin opened /admin, past a
    proxy's rule for /admin."""
    admin = world.browser(ADMIN)
    for path in ("/adm%FFin", "/ad%C0min/audit", "/ap%FFi/sellers"):
        answer = admin.get(path)
        assert answer.status_code == 400, path
        assert answer.json()["error"]["code"] == "bad_request"


def test_signing_out_deletes_the_session_so_a_replayed_cookie_is_worthless(world, server):
    browser = world.browser(SELLER)
    cookie, csrf = browser.http.cookies[SESSION], browser.token
    sessions = db_snapshot(server.db_path)["web_session"][0]
    answer = browser.post_form("/logout", {})
    assert (answer.status_code, answer.headers["Location"]) == (303, "/login?signed_out=1")
    assert "max-age=0" in set_cookies(answer)[SESSION].lower()
    assert db_snapshot(server.db_path)["web_session"][0] == sessions - 1  # its row is gone
    replay = world.browser()
    replay.http.cookies.set(SESSION, cookie)
    ended = replay.get("/seller")
    assert ended.headers["Location"] == "/login?ended=1"  # a session sent
    assert "max-age=0" in set_cookies(ended)[SESSION].lower()  # said once (helper-109)
    posted = refused(
        server, 303, replay.post_form, "/seller/credit-requests", {"amount": "9"}, csrf
    )
    assert posted.headers["Location"] == "/login?ended=1"
    replay.http.cookies.set(SESSION, cookie)
    again = replay.post_form("/logout", {}, csrf)  # signed out in another tab, say
    assert (again.status_code, again.headers["Location"]) == (303, "/login?signed_out=1")
    assert db_snapshot(server.db_path)["web_session"][0] == sessions - 1


# --- CSRF and roles on every route ----------------------------------------------------------


def fill(path: str, world: World) -> str:
    return path.format(**world.ids)


@pytest.mark.parametrize("name, role, path, fields", POSTS, ids=[p[0] for p in POSTS])
def test_a_page_post_without_its_own_sessions_csrf_token_is_403_and_changes_nothing(
    world, name, role, path, fields
):
    you, other = world.browser(role), world.browser(role)  # two sessions, one credential
    path, fields = fill(path, world), {**fields, "idempotency_key": f"k-{uuid.uuid4()}"}
    for csrf in (False, "", other.token, you.token.upper()):
        answer = refused(world.server, 403, you.post_form, path, fields, csrf)
        assert "did not come from this site" in text_of(answer.text, "error-message")
    assert you.post_form(path, fields).status_code in (201, 303)  # the same form, its own token


@pytest.mark.parametrize("name, role, path, fields", POSTS[:10], ids=[p[0] for p in POSTS[:10]])
def test_a_page_post_for_another_role_is_403_and_changes_nothing(world, name, role, path, fields):
    intruder = world.browser(SELLER if role == ADMIN else ADMIN)
    answer = refused(world.server, 403, intruder.post_form, fill(path, world), fields)
    assert "This page is for" in text_of(answer.text, "error-message")


@pytest.mark.parametrize("role", [ADMIN, SELLER])
def test_a_roles_pages_are_403_for_the_other_role_and_ask_anonymous_visitors_to_sign_in(
    world, role
):
    other, anonymous = world.browser(SELLER if role == ADMIN else ADMIN), world.browser()
    for path in [fill(path, world) for path in GETS[role]]:
        answer, sent = other.get(path), anonymous.get(path)
        assert answer.status_code == 403, path
        assert "This page is for" in text_of(answer.text, "error-message")
        assert (sent.status_code, sent.headers["Location"]) == (303, "/login"), path
    assert anonymous.get("/").headers["Location"] == "/login"


@pytest.mark.parametrize("name, role, path, fields", POSTS, ids=[p[0] for p in POSTS])
def test_an_anonymous_post_is_sent_to_sign_in_and_changes_nothing(world, name, role, path, fields):
    stolen = world.browser(role).token  # even a real form token is no use without the cookie
    anonymous = world.browser()
    answer = refused(world.server, 303, anonymous.post_form, fill(path, world), fields, stolen)
    assert answer.headers["Location"] == "/login"


# --- headers, hostile bodies and the JSON API ------------------------------------------------


def test_every_page_answer_carries_the_security_headers(world):
    admin, seller, anonymous = world.browser(ADMIN), world.browser(SELLER), world.browser()
    answers = [anonymous.get("/"), anonymous.get("/login"), anonymous.get("/admin")]
    answers += [admin.get(fill(p, world)) for p in GETS[ADMIN]] + [seller.get("/seller")]
    answers += [seller.get("/admin"), admin.get("/admin/sellers/999999999")]
    answers += [seller.post_form("/seller/credit-requests", {"amount": "x"})]
    answers += [seller.post_form("/seller/credit-requests", {"amount": "1"})]
    assert {a.status_code for a in answers} == {200, 303, 403, 404, 422}
    for answer in answers:
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store", answer.url
    for name, kind in (("app.css", "text/css"), ("app.js", "text/javascript")):
        static = anonymous.get("/static/" + name)
        assert (static.status_code, static.headers["Content-Type"].split(";")[0]) == (200, kind)


@pytest.mark.parametrize(
    "body, content_type, status",
    [
        ('{"amount": "5000"}', "application/json", 422),
        ("amount=5000", "multipart/form-data; boundary=x", 422),
        (b"amount=\xff\xfe5000&csrf=", "application/x-www-form-urlencoded", 422),
        ("amount=%ff%fe5000&csrf=", "application/x-www-form-urlencoded", 422),
        ("amount=5&" + "x" * 70_000, "application/x-www-form-urlencoded", 413),
    ],
    ids=["json", "multipart", "not utf-8", "escaped not utf-8", "over the body limit"],
)
def test_an_unreadable_form_is_a_4xx_page_not_a_500(world, body, content_type, status):
    seller = world.browser(SELLER)
    answer = refused(
        world.server, status, seller.post, "/seller/credit-requests", body, content_type
    )
    assert text_of(answer.text, "error-message")


def test_the_json_api_is_unchanged_and_does_not_take_the_session_cookie(world, server):
    browser = world.browser(SELLER)
    missing = browser.get("/no-such-page")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no such route"}}
    me = browser.get("/api/me")
    assert (me.status_code, me.json()["error"]["code"]) == (401, "unauthorized")
    before = db_snapshot(server.db_path)
    url = server.url + "/api/credit-requests"
    posted = browser.http.post(url, json={"amount": 5}, timeout=TIMEOUT)
    assert (posted.status_code, posted.json()["error"]["code"]) == (401, "unauthorized")
    assert db_snapshot(server.db_path) == before


def test_the_admins_list_of_sellers_marks_a_suspended_one(world, admin):
    sid = world.seller["id"]
    listed = f"/admin?after_id={sid - 1}"  # the page of sellers that starts with it
    page = world.browser(ADMIN).get(listed).text
    assert f'href="/admin/sellers/{sid}"' in page and text_of(page, f"suspended-{sid}") is None
    assert admin.post(f"/api/sellers/{sid}/suspend").status_code == 200
    page = world.browser(ADMIN).get(listed).text
    assert text_of(page, f"suspended-{sid}") == "suspended"
    assert admin.post(f"/api/sellers/{sid}/reactivate").status_code == 200
