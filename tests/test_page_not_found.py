"""A mistyped page address in a browser: the site's styled 404 page, while the API keeps JSON.

bottle's own refusals (no such route, wrong method) are JSON for the API's paths
(`/api/...`, `/health`, `/openapi.json`) whatever the client accepts; on any
other path a client whose Accept prefers text/html, as a browser's does, gets
the `error` page with the pages' security headers and a signed-in visitor's menu.
"""

from __future__ import annotations

import pytest

from chargebox.web.html import wants_html
from tests.support import Api
from tests.test_http_contract import assert_error
from tests.web_support import ADMIN, SELLER, text_of

# What Firefox and Chrome send for a page they navigate to.
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
MISTYPED = ["/sellr", "/admin/nope", "/seller/x", "/admin/sellers/abc", "/login/extra", "/x.php"]


def assert_styled_page(answer, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Request-Id"]
    assert f"<title>Error {status} · chargebox</title>" in answer.text
    assert '<link rel="stylesheet" href="/static/app.css">' in answer.text
    assert '"error"' not in answer.text  # no JSON inside
    return text_of(answer.text, "error-message")


@pytest.mark.parametrize("path", MISTYPED)
def test_a_mistyped_page_address_in_a_browser_is_the_styled_404_page(world, path):
    answer = world.browser().http.get(world.server.url + path, headers={"Accept": BROWSER})
    message = assert_styled_page(answer, 404)
    assert message == "There is no page at this address. Check it for a typing mistake."
    assert 'id="sign-out"' not in answer.text


@pytest.mark.parametrize("role, menu", [(SELLER, "Your account"), (ADMIN, "Audit")])
def test_a_signed_in_visitor_keeps_its_menu_on_the_404_page(world, role, menu):
    browser = world.browser(role)
    answer = browser.http.get(world.server.url + "/seller/x", headers={"Accept": BROWSER})
    assert_styled_page(answer, 404)
    assert menu in answer.text and 'id="sign-out"' in answer.text
    assert f'name="csrf" value="{browser.token}"' in answer.text  # signing out still works


def test_a_wrong_method_on_a_page_is_the_styled_405_page_with_allow(world):
    http, url = world.browser().http, world.server.url
    for method, path, allowed in (("GET", "/logout", "POST"), ("DELETE", "/seller", "GET")):
        answer = http.request(method, url + path, headers={"Accept": BROWSER})
        assert assert_styled_page(answer, 405) == "This page cannot be opened that way."
        assert allowed in answer.headers["Allow"]
        assert ("HEAD" in answer.headers["Allow"]) == (allowed == "GET")


@pytest.mark.parametrize("path", ["/api/nope", "/api", "/api/sellers/abc", "/health/x"])
def test_the_api_keeps_json_errors_even_for_a_browser(server, path):
    api = Api(server.url)
    assert_error(api.get(path, headers={"Accept": BROWSER}), 404, "not_found")
    assert_error(api.post("/health", headers={"Accept": BROWSER}), 405, "method_not_allowed")
    assert_error(api.get("/openapi.json/x", headers={"Accept": "text/html"}), 404, "not_found")
    api.close()


@pytest.mark.parametrize("accept", ["", "*/*", "application/json", "text/html;q=0"])
def test_a_client_that_does_not_prefer_html_gets_json_for_a_page_address(server, accept):
    api = Api(server.url)
    assert_error(api.get("/sellr", headers={"Accept": accept}), 404, "not_found")
    api.close()


@pytest.mark.parametrize(
    "path, accept, html",
    [
        ("/sellr", BROWSER, True),
        ("/sellr", "TEXT/HTML", True),
        ("/sellr", "application/json;q=0.5, text/html", True),
        ("/sellr", "text/html, application/json", False),  # a tie: the API's shape
        ("/sellr", "text/html;q=0", False),
        ("/sellr", "*/*", False),
        ("/sellr", "", False),
        ("/api/nope", BROWSER, False),
        ("/api", BROWSER, False),
        ("/health", BROWSER, False),
        ("/openapi.json/x", BROWSER, False),
        ("/apiary", BROWSER, True),  # not under /api/
    ],
)
def test_html_is_chosen_only_off_the_api_and_when_accept_prefers_it(path, accept, html):
    assert wants_html(path, accept) is html
