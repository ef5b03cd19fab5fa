"""Access control sweep: every route of the app, every kind of caller, against a real server.

The routes are read from the bottle app itself, so a new route is swept the
moment it is installed, and it fails `test_every_route_of_the_app_is_classified`
until it is given a class in ACCESS below (and a sample body, if it is a POST).
Each route is called with the sample body it would accept and with ids of the
calling seller's own records, so that a refusal can only come from who is
calling. Every refusal is checked to leave the database file exactly as it was
(row counts, contents and the sum of balances, read through a separate
read-only sqlite3 connection).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import chargebox
from chargebox.config import Config
from chargebox.web import create_app
from tests.support import ADMIN_TOKEN, Api, db_snapshot, new_seller

PUBLIC, ADMIN, SELLER, BOTH = "public", "admin only", "seller only", "admin and sellers"

# Who may call each route. A route of the app missing here fails the sweep.
ACCESS = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("POST", "/api/sellers"): ADMIN,
    ("GET", "/api/sellers"): ADMIN,
    ("GET", "/api/sellers/{id}"): ADMIN,
    ("GET", "/api/me"): SELLER,
    ("POST", "/api/credit-requests"): SELLER,
    ("GET", "/api/credit-requests"): BOTH,
    ("GET", "/api/credit-requests/{id}"): BOTH,
    ("POST", "/api/credit-requests/{id}/approve"): ADMIN,
    ("POST", "/api/credit-requests/{id}/reject"): ADMIN,
    ("POST", "/api/sellers/{id}/adjustments"): ADMIN,
    ("POST", "/api/sales"): SELLER,
    ("GET", "/api/sales"): BOTH,
    ("GET", "/api/sales/{id}"): BOTH,
    ("POST", "/api/sales/{id}/refund"): ADMIN,
    ("GET", "/api/ledger"): BOTH,
    ("GET", "/api/statements"): BOTH,
    ("GET", "/api/phones"): ADMIN,
    ("POST", "/api/phones"): ADMIN,
    ("GET", "/api/audit"): ADMIN,
    ("GET", "/metrics"): ADMIN,
    ("GET", "/api/sellers/{id}/keys"): ADMIN,
    ("POST", "/api/sellers/{id}/keys"): ADMIN,
    ("POST", "/api/sellers/{id}/keys/{key_id}/revoke"): ADMIN,
    ("POST", "/api/sellers/{id}/keys/{key_id}/rotate"): ADMIN,
    ("POST", "/api/sellers/{id}/suspend"): ADMIN,
    ("POST", "/api/sellers/{id}/reactivate"): ADMIN,
}

# A body each POST route accepts, so that a refusal is never about the body.
SAMPLE_BODIES = {
    "/api/sellers": {"name": "sweep"},
    "/api/credit-requests": {"amount": 5000},
    "/api/credit-requests/{id}/approve": None,
    "/api/credit-requests/{id}/reject": None,
    "/api/sellers/{id}/adjustments": {"amount": 700, "reason": "sweep"},
    "/api/sales": {"phone": "09121234567", "amount": 1000},
    "/api/sales/{id}/refund": {"reason": "sweep"},
    "/api/phones": {"number": "09351234567"},
    "/api/sellers/{id}/keys": {"label": "sweep"},
    "/api/sellers/{id}/keys/{key_id}/revoke": None,
    "/api/sellers/{id}/keys/{key_id}/rotate": None,
    "/api/sellers/{id}/suspend": None,
    "/api/sellers/{id}/reactivate": None,
}

# A query each GET route needs (`{seller}`: the owner's id), so a refusal is never about it.
SAMPLE_QUERIES = {"/api/statements": "seller_id={seller}&day=2026-12-01"}

# Which of the calling seller's own records fills `{id}`: the most tempting one for a seller.
OWN_IDS = {
    "/api/sellers/{id}": "seller",
    "/api/sellers/{id}/adjustments": "seller",
    "/api/credit-requests/{id}": "pending_request",
    "/api/credit-requests/{id}/approve": "pending_request",
    "/api/credit-requests/{id}/reject": "pending_request",
    "/api/sales/{id}": "sale",
    "/api/sales/{id}/refund": "sale",  # its own sale, fresh for each test: a seller may not
    # A seller of each test's own (and its key): the admin's calls that succeed suspend it
    # or revoke its key, which must not touch the owner the other routes are called with.
    "/api/sellers/{id}/keys": "spare_seller",
    "/api/sellers/{id}/keys/{key_id}/revoke": "spare_seller",
    "/api/sellers/{id}/keys/{key_id}/rotate": "spare_seller",
    "/api/sellers/{id}/suspend": "spare_seller",
    "/api/sellers/{id}/reactivate": "spare_seller",
}

DOC = json.loads((Path(chargebox.__file__).parent / "openapi.json").read_text("utf-8"))


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route installed by `create_app`, `{id}` for a path parameter."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Config(db_path=Path(tmp) / "routes.db", admin_token=ADMIN_TOKEN))
        return [
            (route.method, re.sub(r"<(\w+)[^>]*>", _placeholder, route.rule))
            for route in app.routes
            if route.method != "HEAD" and route.app is app  # the JSON API, not the pages
        ]


def _placeholder(match: re.Match) -> str:
    return "{id}" if match[1] == "ident" else "{" + match[1] + "}"


ROUTES = app_routes()


def route_id(route: tuple[str, str]) -> str:
    return " ".join(route)


def routes_of(*classes: str) -> list[tuple[str, str]]:
    return [route for route in ROUTES if ACCESS.get(route) in classes]


def access_of(route: tuple[str, str]) -> str:
    if route not in ACCESS:
        pytest.fail(f"{route_id(route)} is installed but not classified in ACCESS")
    return ACCESS[route]


BAD_TOKENS = {
    "unknown bearer token": "Bearer not-a-token-of-anyone",
    "admin token plus a character": f"Bearer {ADMIN_TOKEN}x",
    "admin token minus a character": f"Bearer {ADMIN_TOKEN[:-1]}",
    "admin token without a scheme": ADMIN_TOKEN,
    "admin token as basic auth": "Basic " + base64.b64encode(ADMIN_TOKEN.encode()).decode(),
    "empty bearer": "Bearer ",
    "well-formed unknown seller key": "Bearer cbk_" + "A" * 43,
}


@pytest.fixture(scope="module")
def sweep_server(tmp_path_factory, new_server):
    with new_server(tmp_path_factory.mktemp("access")) as process:
        yield process


@pytest.fixture(scope="module")
def callers(sweep_server):
    """Api clients: the admin, the owner (a funded seller) and another funded seller."""
    admin = sweep_server.admin()
    owner, owner_key = new_seller(admin, "owner", 100_000_000)
    other, other_key = new_seller(admin, "other", 100_000_000)
    apis = {
        "admin": admin,
        "owner": sweep_server.seller(owner_key),
        "other": sweep_server.seller(other_key),
    }
    apis["owner"].seller_id, apis["other"].seller_id = owner["id"], other["id"]
    sale = apis["other"].post("/api/sales", {"phone": "09131234567", "amount": 2000})
    assert sale.status_code == 201, sale.text
    yield apis
    for api in apis.values():
        api.close()


@pytest.fixture
def own_ids(callers) -> Iterator[dict[str, int]]:
    """Fresh records of the owner for each test: its id, a pending request, a sale.

    The request is rejected afterwards (if the test left it pending), so that the owner
    stays under its cap of pending requests (CHARGEBOX_MAX_PENDING_REQUESTS) all sweep long.
    """
    owner = callers["owner"]
    spare, _ = new_seller(callers["admin"], "spare")
    (spare_key,) = callers["admin"].get(f"/api/sellers/{spare['id']}/keys").json()["items"]
    request = owner.post("/api/credit-requests", {"amount": 5000})
    sale = owner.post("/api/sales", {"phone": "09121234567", "amount": 1000})
    assert request.status_code == 201 and sale.status_code == 201, (request.text, sale.text)
    yield {
        "seller": owner.seller_id,
        "pending_request": request.json()["id"],
        "sale": sale.json()["id"],
        "spare_seller": spare["id"],
        "spare_key": spare_key["id"],
    }
    for pending in callers["admin"].get("/api/credit-requests?status=pending").json()["items"]:
        callers["admin"].post(f"/api/credit-requests/{pending['id']}/reject")


def call(api: Api, route: tuple[str, str], ids: dict[str, int], headers=None, **kwargs):
    """Call a route with its sample body and, for `{id}`, the owner's matching record."""
    method, path = route
    if "{id}" in path:
        assert path in OWN_IDS, f"{route_id(route)}: add which record fills {{id}} to OWN_IDS"
        path = path.replace("{id}", str(ids[OWN_IDS[path]]))
        path = path.replace("{key_id}", str(ids.get("spare_key", 0)))
    if path in SAMPLE_QUERIES:
        path += "?" + SAMPLE_QUERIES[path].format(seller=ids["seller"])
    body = None
    if method == "POST":
        assert route[1] in SAMPLE_BODIES, f"{route_id(route)}: add a sample body to SAMPLE_BODIES"
        body = SAMPLE_BODIES[route[1]]
    return api.request(method, path, body, headers=headers, **kwargs)


def refused(db_path: Path, send, status: int, code: str):
    """Send a request that must be refused with `status`/`code` and must change nothing."""
    before = db_snapshot(db_path)
    response = send()
    after = db_snapshot(db_path)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert response.json()["error"]["code"] == code, response.text
    changed = {key: (before[key], after[key]) for key in after if before.get(key) != after[key]}
    assert not changed, f"a refused {response.request.method} {response.url} changed {changed}"
    return response


def message_without(response, ident: int) -> str:
    return response.json()["error"]["message"].replace(str(ident), "<id>")


def test_every_route_of_the_app_is_classified():
    assert len(ROUTES) == len(set(ROUTES)), f"a route is installed twice: {ROUTES}"
    unclassified = set(ROUTES) - set(ACCESS)
    assert not unclassified, f"installed routes with no access class: {sorted(unclassified)}"
    stale = set(ACCESS) - set(ROUTES)
    assert not stale, f"classified routes the app does not install: {sorted(stale)}"
    posts = {path for method, path in ROUTES if method == "POST"}
    assert posts == set(SAMPLE_BODIES), "every POST route needs exactly one sample body"
    with_ids = {path for _, path in ROUTES if "{id}" in path}
    assert with_ids == set(OWN_IDS), "every route with {id} needs exactly one OWN_IDS entry"


def test_the_access_classes_agree_with_the_openapi_document():
    said = {}
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            summary = operation["summary"]
            if operation.get("security") == []:
                said[method.upper(), path] = PUBLIC
            elif summary.endswith("(admin)"):
                said[method.upper(), path] = ADMIN
            elif summary.endswith("(seller)"):
                said[method.upper(), path] = SELLER
            elif "(admin: " in summary and "; seller: " in summary:
                said[method.upper(), path] = BOTH
            else:
                said[method.upper(), path] = f"unstated in {summary!r}"
    assert said == ACCESS


@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_every_route_refuses_an_anonymous_caller_with_401_unless_it_is_public(
    sweep_server, route, own_ids
):
    anonymous = Api(sweep_server.url)
    try:
        if access_of(route) == PUBLIC:
            assert call(anonymous, route, own_ids).status_code == 200
            return
        response = refused(
            sweep_server.db_path,
            lambda: call(anonymous, route, own_ids),
            401,
            "unauthorized",
        )
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        anonymous.close()


@pytest.mark.parametrize("token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
@pytest.mark.parametrize("route", ROUTES, ids=route_id)
def test_every_route_refuses_a_bad_token_with_401_unless_it_is_public(
    sweep_server, route, token, own_ids
):
    anonymous = Api(sweep_server.url)
    headers = {"Authorization": token}
    try:
        if access_of(route) == PUBLIC:
            assert call(anonymous, route, own_ids, headers=headers).status_code == 200
            return
        refused(
            sweep_server.db_path,
            lambda: call(anonymous, route, own_ids, headers=headers),
            401,
            "unauthorized",
        )
    finally:
        anonymous.close()


@pytest.mark.parametrize("route", routes_of(ADMIN), ids=route_id)
def test_admin_only_routes_refuse_a_seller_with_403_even_on_its_own_records(
    sweep_server, callers, route, own_ids
):
    refused(sweep_server.db_path, lambda: call(callers["owner"], route, own_ids), 403, "forbidden")


@pytest.mark.parametrize("route", routes_of(SELLER), ids=route_id)
def test_seller_only_routes_refuse_the_admin_with_403(sweep_server, callers, route, own_ids):
    refused(sweep_server.db_path, lambda: call(callers["admin"], route, own_ids), 403, "forbidden")


@pytest.mark.parametrize("route", routes_of(ADMIN, SELLER, BOTH), ids=route_id)
def test_every_route_lets_its_rightful_callers_past_authentication(callers, route, own_ids):
    """The refusals above are about who calls: the same calls succeed for the right caller."""
    rightful = {ADMIN: ["admin"], SELLER: ["owner"], BOTH: ["admin", "owner"]}[ACCESS[route]]
    for who in rightful:
        response = call(callers[who], route, own_ids)
        assert 200 <= response.status_code < 300, (who, response.text)


@pytest.mark.parametrize(
    "route", [route for route in routes_of(BOTH) if "{id}" in route[1]], ids=route_id
)
def test_a_sellers_record_by_id_is_404_to_another_seller_and_visible_to_owner_and_admin(
    sweep_server, callers, route, own_ids
):
    response = refused(
        sweep_server.db_path, lambda: call(callers["other"], route, own_ids), 404, "not_found"
    )
    # Told apart from an id that does not exist by nothing but the id: existence is not revealed.
    unknown = 999_999_999_999
    missing = callers["other"].get(route[1].replace("{id}", str(unknown)))
    assert missing.status_code == 404, missing.text
    assert message_without(response, own_ids[OWN_IDS[route[1]]]) == message_without(
        missing, unknown
    )
    for who in ("owner", "admin"):
        found = call(callers[who], route, own_ids)
        assert found.status_code == 200, (who, found.text)
        assert found.json()["seller_id"] == callers["owner"].seller_id


LIST_ROUTES = [
    route
    for route in routes_of(BOTH)
    if route[0] == "GET" and "{id}" not in route[1] and route[1] not in SAMPLE_QUERIES
]


def test_a_statement_of_another_seller_is_403_to_a_seller_and_the_admin_must_name_one(
    sweep_server, callers
):
    owner, other = callers["owner"], callers["other"]
    for asker, target in ((other, owner), (owner, other)):
        refused(sweep_server.db_path,
                lambda asker=asker, target=target: asker.get(
                    f"/api/statements?seller_id={target.seller_id}&month=2026-12"),
                403, "forbidden")  # fmt: skip
    mine = owner.get("/api/statements?month=2026-12").json()
    assert mine["seller_id"] == owner.seller_id
    unnamed = callers["admin"].get("/api/statements?month=2026-12")
    assert unnamed.status_code == 422 and unnamed.json()["error"]["field"] == "seller_id"


@pytest.mark.parametrize("route", LIST_ROUTES, ids=route_id)
def test_a_list_asked_for_another_sellers_id_is_403_to_a_seller(
    sweep_server, callers, route, own_ids
):
    owner, other = callers["owner"], callers["other"]
    for asker, target in ((other, owner), (owner, other)):
        refused(
            sweep_server.db_path,
            lambda asker=asker, target=target: asker.get(
                f"{route[1]}?seller_id={target.seller_id}"
            ),
            403,
            "forbidden",
        )
    mine = owner.get(f"{route[1]}?seller_id={owner.seller_id}")
    assert mine.status_code == 200, mine.text
    theirs = callers["admin"].get(f"{route[1]}?seller_id={other.seller_id}")
    assert theirs.status_code == 200, theirs.text
    assert {item["seller_id"] for item in theirs.json()["items"]} == {other.seller_id}


@pytest.mark.parametrize("route", LIST_ROUTES, ids=route_id)
def test_a_list_shows_a_seller_only_its_own_records(callers, route, own_ids):
    everything = callers["admin"].get(f"{route[1]}?limit=1000")
    assert everything.status_code == 200, everything.text
    owners = {item["seller_id"] for item in everything.json()["items"]}
    assert {callers["owner"].seller_id, callers["other"].seller_id} <= owners
    for who in ("owner", "other"):
        seen = callers[who].get(f"{route[1]}?limit=1000")
        assert seen.status_code == 200, seen.text
        assert {item["seller_id"] for item in seen.json()["items"]} == {callers[who].seller_id}
