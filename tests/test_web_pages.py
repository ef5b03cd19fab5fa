"""The HTML pages against a real server process, spoken to as a browser would (`requests`).

Covers sign-in and sign-out (cookie flags, the login form's double-submit token,
server-side session deletion), CSRF and roles on every page route, the seller's
and the admin's forms (Persian digits, idempotent selling, refusals shown beside
their field with typed values kept), escaping, security headers and 4xx pages
instead of 500s. A refusal is checked to change nothing with `db_snapshot`.
"""

from __future__ import annotations

import html
import re
import tempfile
import uuid
from pathlib import Path

import pytest
import requests

from chargebox.config import Config
from chargebox.web import create_app
from tests.support import ADMIN_TOKEN, Api, books, db_snapshot, new_seller

TIMEOUT = 30
SESSION, PHONE = "chargebox_session", "09121234567"
ADMIN, SELLER = "admin", "seller"
PAGE_ROUTES = """
    GET /           GET /static/{name}     GET /login       POST /login      POST /logout
    GET /seller     POST /seller/sales     POST /seller/credit-requests
    GET /admin      POST /admin/sellers    GET /admin/sellers/{ident}        GET /admin/audit
    POST /admin/sellers/{ident}/adjustments      POST /admin/credit-requests/{ident}/{decision}
"""
# Every POST of a signed-in page, with a form it would accept: (name, role, path, fields).
POSTS = [
    ("sell", SELLER, "/seller/sales", {"phone": PHONE, "amount": "1000"}),
    ("request credit", SELLER, "/seller/credit-requests", {"amount": "5000"}),
    ("create seller", ADMIN, "/admin/sellers", {"name": "sweep"}),
    ("adjust", ADMIN, "/admin/sellers/{seller}/adjustments", {"amount": "-700", "reason": "r"}),
    ("approve", ADMIN, "/admin/credit-requests/{request}/approve", {}),
    ("reject", ADMIN, "/admin/credit-requests/{request}/reject", {}),
    ("seller signs out", SELLER, "/logout", {}),
    ("admin signs out", ADMIN, "/logout", {}),
]
GETS = {SELLER: ["/seller"], ADMIN: ["/admin", "/admin/sellers/{seller}", "/admin/audit"]}


def value_of(page: str, ident: str) -> str:
    """The value of the <input> with this id (or name), unescaped as a browser would."""
    tag = re.search(rf'<input[^>]*? (?:id|name)="{re.escape(ident)}"[^>]*>', page)
    assert tag, f"no input {ident!r} on the page"
    value = re.search(r' value="([^"]*)"', tag[0])
    return html.unescape(value[1]) if value else ""


def text_of(page: str, ident: str) -> str | None:
    match = re.search(rf'id="{re.escape(ident)}"[^>]*>([^<]*)<', page)
    return html.unescape(match.group(1)) if match else None


def set_cookies(response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.raw.headers.getlist("Set-Cookie")}


class Browser:
    """A cookie-keeping client that never follows redirects, so each 303 can be checked."""

    def __init__(self, url: str) -> None:
        self.url, self.http, self.token = url, requests.Session(), ""

    def get(self, path: str):
        return self.http.get(self.url + path, allow_redirects=False, timeout=TIMEOUT)

    def post(self, path: str, data, content_type: str = "application/x-www-form-urlencoded"):
        headers, url = {"Content-Type": content_type}, self.url + path
        return self.http.post(url, data, headers=headers, allow_redirects=False, timeout=TIMEOUT)

    def post_form(self, path: str, fields: dict, csrf: bool | str = True):
        token = self.token if csrf is True else csrf
        return self.post(path, {**fields, **({"csrf": token} if token is not False else {})})

    def sign_in(self, token: str):
        form = {"token": token}
        response = self.post_form("/login", form, value_of(self.get("/login").text, "csrf"))
        if response.status_code == 303:
            self.token = value_of(self.get(response.headers["Location"]).text, "csrf")
        return response


class World:
    """A funded seller with a pending request, and signed-in browsers opened on demand."""

    def __init__(self, server, admin: Api) -> None:
        self.server, self.opened = server, []
        self.seller, self.key = new_seller(admin, f"shop {uuid.uuid4().hex[:6]}", 100_000)
        self.api = server.seller(self.key)
        request = self.api.post("/api/credit-requests", {"amount": 5000})
        self.ids = {"seller": self.seller["id"], "request": request.json()["id"]}

    def browser(self, role: str | None = None) -> Browser:
        self.opened.append(Browser(self.server.url))
        if role:
            answer = self.opened[-1].sign_in(self.key if role == SELLER else ADMIN_TOKEN)
            assert answer.status_code == 303, answer.text
        return self.opened[-1]

    def balance(self) -> int:
        return self.api.get("/api/me").json()["balance"]


@pytest.fixture
def world(server, admin):
    made = World(server, admin)
    yield made
    made.api.close()
    for browser in made.opened:
        browser.http.close()


def refused(server, status: int, send, *args):
    """`send(*args)` must be refused with `status` as an HTML page, changing nothing on disk."""
    before = db_snapshot(server.db_path)
    response = send(*args)
    assert response.status_code == status, response.text[:2000]
    assert response.headers["Content-Type"].startswith("text/html"), response.headers
    assert db_snapshot(server.db_path) == before, f"a refused {response.request.url} wrote"
    return response


def page_routes() -> set[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Config(db_path=Path(tmp) / "r.db", admin_token=ADMIN_TOKEN))
        return {
            (route.method, re.sub(r"<(\w+)[^>]*>", r"{\1}", route.rule))
            for route in app.routes
            if route.method != "HEAD" and route.app is not app
        }


def pattern(path: str) -> str:
    return re.sub(r"\{\w+\}", "{}", re.sub(r"/(approve|reject)$", "/{}", path))


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


def test_signing_out_deletes_the_session_so_a_replayed_cookie_is_worthless(world, server):
    browser = world.browser(SELLER)
    cookie, csrf = browser.http.cookies[SESSION], browser.token
    sessions = db_snapshot(server.db_path)["web_session"][0]
    answer = browser.post_form("/logout", {})
    assert (answer.status_code, answer.headers["Location"]) == (303, "/login")
    assert "max-age=0" in set_cookies(answer)[SESSION].lower()
    assert db_snapshot(server.db_path)["web_session"][0] == sessions - 1  # its row is gone
    replay = world.browser()
    replay.http.cookies.set(SESSION, cookie)
    assert replay.get("/seller").headers["Location"] == "/login"
    posted = refused(
        server, 303, replay.post_form, "/seller/credit-requests", {"amount": "9"}, csrf
    )
    assert posted.headers["Location"] == "/login"


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


@pytest.mark.parametrize("name, role, path, fields", POSTS[:6], ids=[p[0] for p in POSTS[:6]])
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


# --- a seller's forms -------------------------------------------------------------------------


def test_a_seller_requests_credit_and_sells_with_persian_digits_and_separators(world):
    seller = world.browser(SELLER)
    asked = seller.post_form("/seller/credit-requests", {"amount": "۱٬۰۰۰٬۰۰۰"})
    ident = int(re.fullmatch(r"/seller\?requested=(\d+)", asked.headers["Location"])[1])
    request = world.api.get(f"/api/credit-requests/{ident}").json()
    assert (request["amount"], request["status"]) == (1_000_000, "pending")
    notice = text_of(seller.get(asked.headers["Location"]).text, "notice")
    assert f"#{ident} for 1,000,000 toman" in notice
    sold = seller.post_form("/seller/sales", {"phone": "۰۹۱۲ ۳۴۵ ۶۷۸۹", "amount": "۲٬۵۰۰"})
    ident = int(re.fullmatch(r"/seller\?sold=(\d+)", sold.headers["Location"])[1])
    sale = world.api.get(f"/api/sales/{ident}").json()
    assert (sale["phone"], sale["amount"], world.balance()) == ("09123456789", 2500, 97_500)
    notice = text_of(seller.get(sold.headers["Location"]).text, "notice")
    assert "Sold 2,500 toman of charge to 09123456789" in notice


def test_the_same_sell_form_posted_twice_sells_once_and_both_land_on_the_same_sale(world):
    seller = world.browser(SELLER)
    key = value_of(seller.get("/seller").text, "idempotency_key")
    form = {"phone": PHONE, "amount": "3000", "idempotency_key": key}
    first, second = seller.post_form("/seller/sales", form), seller.post_form("/seller/sales", form)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert re.fullmatch(r"/seller\?sold=\d+", first.headers["Location"])
    assert len(world.api.get("/api/sales").json()["items"]) == 1
    assert world.balance() == 97_000


def test_another_sellers_sale_is_not_shown_as_a_notice(world, admin):
    _, key = new_seller(admin, "stranger", 10_000)
    stranger = world.browser()
    stranger.sign_in(key)
    sold = world.browser(SELLER).post_form("/seller/sales", {"phone": PHONE, "amount": "9"})
    assert 'id="notice"' not in stranger.get(sold.headers["Location"]).text


def test_selling_over_the_balance_is_a_409_page_keeping_what_was_typed(world):
    seller = world.browser(SELLER)
    key = value_of(seller.get("/seller").text, "idempotency_key")
    form = {"phone": PHONE, "amount": "200,000", "idempotency_key": key}
    answer = seller.post_form("/seller/sales", form)
    assert answer.status_code == 409
    assert text_of(answer.text, "sale-amount-error").startswith("Not enough credit")
    assert value_of(answer.text, "sale-phone") == PHONE
    assert value_of(answer.text, "sale-amount") == "200,000"
    assert value_of(answer.text, "idempotency_key") not in ("", key)  # a fresh try, a fresh key
    assert text_of(answer.text, "balance") == "100,000 toman" and world.balance() == 100_000
    assert world.api.get("/api/sales").json()["items"] == []


@pytest.mark.parametrize(
    "phone, amount, field",
    [
        ("0912", "1000", "phone"),
        ('"><script>x()</script>', "9", "phone"),
        *((PHONE, typed, "amount") for typed in ("1.5", "abc", "0")),
        *((None, typed, "amount") for typed in ("1.5", "abc", "0", "-5", "9" * 5000)),  # credit
    ],
    ids=lambda value: value[:12] if isinstance(value, str) else None,
)
def test_a_badly_typed_seller_form_is_a_422_page_naming_the_field(world, phone, amount, field):
    seller, form = world.browser(SELLER), "credit" if phone is None else "sale"
    fields = {"amount": amount} if phone is None else {"phone": phone, "amount": amount}
    path = "/seller/credit-requests" if phone is None else "/seller/sales"
    answer = refused(world.server, 422, seller.post_form, path, fields)
    assert text_of(answer.text, f"{form}-{field}-error"), answer.text
    assert "<script>x()" not in answer.text
    for name, typed in fields.items():  # what was typed is shown again, escaped
        assert value_of(answer.text, f"{form}-{name}") == typed


# --- the admin's forms ----------------------------------------------------------------------


def test_the_admin_creates_a_seller_whose_key_is_shown_once_and_works_on_the_api(world, server):
    admin = world.browser(ADMIN)
    answer = admin.post_form("/admin/sellers", {"name": "  Shop Ahmad  "})
    assert answer.status_code == 201
    key, ident = text_of(answer.text, "api-key"), text_of(answer.text, "new-seller-id")
    api = server.seller(key)
    me, _ = api.get("/api/me"), api.close()
    assert (me.status_code, me.json()["name"], str(me.json()["id"])) == (200, "Shop Ahmad", ident)
    assert key not in admin.get(f"/admin/sellers/{ident}").text


def test_approve_and_reject_buttons_decide_once_in_plain_words(fresh_server):
    admin_api = fresh_server.admin()
    _, key = new_seller(admin_api, "buyer")
    seller = fresh_server.seller(key)
    first, second = (
        seller.post("/api/credit-requests", {"amount": a}).json()["id"] for a in (7000, 9)
    )
    admin = Browser(fresh_server.url)
    admin.sign_in(ADMIN_TOKEN)
    page = admin.get("/admin").text
    assert all(f'id="{b}-{i}"' in page for b in ("approve", "reject") for i in (first, second))
    approved = admin.post_form(f"/admin/credit-requests/{first}/approve", {})
    assert approved.headers["Location"] == f"/admin?approved={first}"
    assert "is approved" in text_of(admin.get(approved.headers["Location"]).text, "notice")
    again = admin.post_form(f"/admin/credit-requests/{first}/approve", {})
    assert again.status_code == 409
    assert text_of(again.text, "problem") == f"Credit request {first} is already approved"
    rejected = admin.post_form(f"/admin/credit-requests/{second}/reject", {})
    assert rejected.headers["Location"] == f"/admin?rejected={second}"
    assert admin.post_form(f"/admin/credit-requests/{second}/approve", {}).status_code == 409
    assert seller.get(f"/api/credit-requests/{second}").json()["status"] == "rejected"
    assert books(fresh_server.db_path) == {1: 7000}
    for client in (admin.http, admin_api, seller):
        client.close()


def test_the_admin_adjusts_a_balance_both_ways_with_a_reason(world):
    admin, path = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}"
    for typed, balance in (("\u22122,000", 98_000), ("+۵۰۰", 98_500)):
        answer = admin.post_form(path + "/adjustments", {"amount": typed, "reason": "fix"})
        assert answer.status_code == 303
        assert re.fullmatch(rf"{path}\?adjusted=\d+", answer.headers["Location"])
        notice = text_of(admin.get(answer.headers["Location"]).text, "notice")
        assert "fix" in notice and f"{balance:,} toman" in notice
    assert world.balance() == 98_500


def test_an_adjustment_below_zero_is_a_409_page_and_changes_nothing(world):
    admin, path = world.browser(ADMIN), f"/admin/sellers/{world.seller['id']}/adjustments"
    form = {"amount": "-100001", "reason": "too much"}
    answer = refused(world.server, 409, admin.post_form, path, form)
    assert text_of(answer.text, "adjust-amount-error").startswith("Not enough credit")
    assert value_of(answer.text, "adjust-reason") == "too much"


def test_the_audit_page_shows_the_green_verdict(world):
    answer = world.browser(ADMIN).get("/admin/audit")
    assert answer.status_code == 200
    assert 'class="verdict good" id="verdict"' in answer.text
    assert text_of(answer.text, "verdict") == "✓ The books are consistent"


def test_hostile_and_persian_seller_names_are_shown_escaped_and_intact(world, admin):
    hostile, persian = "<script>alert(1)</script>", "فروشگاه «علی» ۱۲"
    (bad, key), (good, _) = new_seller(admin, hostile), new_seller(admin, persian)
    browser, own = world.browser(ADMIN), world.browser()
    own.sign_in(key)
    pages = [browser.get(f"/admin?after_id={bad['id'] - 1}").text, own.get("/seller").text]
    pages += [browser.get(f"/admin/sellers/{s['id']}").text for s in (bad, good)]
    assert all(hostile not in page for page in pages)
    assert all(html.escape(hostile) in page for page in pages[:3])
    assert persian in pages[0] and persian in pages[3]


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
