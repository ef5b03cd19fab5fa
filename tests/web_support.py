"""Test support for the HTML pages: a cookie-keeping client that reads forms, and a world.

`Browser` speaks to the pages as a browser would, over `requests`; `World` is a
funded seller with a pending credit request. `refused` checks that a refused
post is an HTML page and changed nothing on disk.
"""

from __future__ import annotations

import html
import re
import uuid

import requests

from tests.support import ADMIN_TOKEN, Api, db_snapshot, new_seller

TIMEOUT = 30
ADMIN, SELLER = "admin", "seller"


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
    """A funded seller with a pending request, another seller's sale (to refund), and
    signed-in browsers opened on demand."""

    def __init__(self, server, admin: Api) -> None:
        self.server, self.opened = server, []
        self.seller, self.key = new_seller(admin, f"shop {uuid.uuid4().hex[:6]}", 100_000)
        self.api = server.seller(self.key)
        request = self.api.post("/api/credit-requests", {"amount": 5000})
        (key,) = admin.get(f"/api/sellers/{self.seller['id']}/keys").json()["items"]
        _, other_key = new_seller(admin, f"other {uuid.uuid4().hex[:6]}", 10_000)
        other = server.seller(other_key)  # a sale to refund that leaves this seller's books be
        sale = other.post("/api/sales", {"phone": "09121234567", "amount": 3_000})
        other.close()
        assert sale.status_code == 201, sale.text
        self.ids = {"seller": self.seller["id"], "request": request.json()["id"], "key": key["id"],
                    "sale": sale.json()["id"]}  # fmt: skip

    def browser(self, role: str | None = None) -> Browser:
        self.opened.append(Browser(self.server.url))
        if role:
            answer = self.opened[-1].sign_in(self.key if role == SELLER else ADMIN_TOKEN)
            assert answer.status_code == 303, answer.text
        return self.opened[-1]

    def balance(self) -> int:
        return self.api.get("/api/me").json()["balance"]


def refused(server, status: int, send, *args):
    """`send(*args)` must be refused with `status` as an HTML page, changing nothing on disk."""
    before = db_snapshot(server.db_path)
    response = send(*args)
    assert response.status_code == status, response.text[:2000]
    assert response.headers["Content-Type"].startswith("text/html"), response.headers
    assert db_snapshot(server.db_path) == before, f"a refused {response.request.url} wrote"
    return response
