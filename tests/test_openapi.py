"""The OpenAPI document: valid, complete both ways, served as is, and true to real answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import chargebox
from chargebox.config import DEFAULT_MAX_AMOUNT, Config
from chargebox.queries import DEFAULT_LIMIT, MAX_LIMIT
from chargebox.web import create_app
from chargebox.web.errors import STATUS
from tests.support import Api, new_seller

DOC = json.loads((Path(chargebox.__file__).parent / "openapi.json").read_text("utf-8"))
URI = "urn:chargebox:openapi"
REGISTRY = Registry().with_resource(
    URI, Resource.from_contents(DOC, default_specification=DRAFT202012)
)
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PUBLIC = {("GET", "/health"), ("GET", "/openapi.json")}


def operations() -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): operation
        for path, item in DOC["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _placeholder(match: re.Match) -> str:
    """bottle's `<ident:re:...>` is the document's `{id}`; any other `<name:...>` is `{name}`."""
    return "{id}" if match[1] == "ident" else "{" + match[1] + "}"


def conforms(response: requests.Response, path: str) -> dict | list:
    """Assert the answer's status is documented for its operation and its body fits the schema."""
    method = response.request.method.lower()
    status = str(response.status_code)
    assert status in DOC["paths"][path][method]["responses"], (
        f"{method.upper()} {path} answered undocumented {status}: {response.text}"
    )
    pointer = "/".join(
        (
            "",
            "paths",
            path.replace("~", "~0").replace("/", "~1"),
            method,
            "responses",
            status,
            "content",
            "application~1json",
            "schema",
        )
    )
    body = response.json()
    validate_instance(body, {"$ref": f"{URI}#{pointer}"}, cls=OAS31Validator, registry=REGISTRY)
    documented = DOC["paths"][path][method]["responses"][status].get("headers", {})
    assert ("Location" in documented) is ("Location" in response.headers), (method, path, status)
    return body


def error_code(response: requests.Response, path: str) -> str:
    return conforms(response, path)["error"]["code"]


def test_the_document_is_a_valid_openapi_3_document():
    assert DOC["openapi"].startswith("3.")
    validate_spec(DOC)


def test_every_403_documented_names_a_suspended_sellers_key():
    """docs/api.md: a suspended seller's key is `403 seller_suspended` on every route."""
    for path, operations in DOC["paths"].items():
        for method, operation in operations.items():
            refused = (
                operation.get("responses", {}).get("403") if isinstance(operation, dict) else None
            )
            if refused:
                schema = refused["content"]["application/json"]["schema"]["allOf"][1]
                code = schema["properties"]["error"]["properties"]["code"]
                assert "seller_suspended" in code.get("enum", [code.get("const")]), (method, path)
                assert "`seller_suspended`" in refused["description"], (method, path)


def test_every_installed_route_is_documented_and_nothing_else(tmp_path):
    app = create_app(Config(db_path=tmp_path / "x.db", admin_token="t"))
    installed = {
        (route.method, re.sub(r"<(\w+)[^>]*>", _placeholder, route.rule))
        for route in app.routes
        if route.method != "HEAD" and route.app is app  # the HTML pages are not in the API
    }
    assert installed - set(operations()) == set(), "installed but not documented"
    assert set(operations()) - installed == set(), "documented but not installed"


def test_only_health_and_the_document_are_public_and_every_other_route_documents_401():
    for key, operation in operations().items():
        if key in PUBLIC:
            assert operation["security"] == [], key
        else:
            assert operation["security"] == [{"bearerAuth": []}], key
            assert {"401", "500"} <= set(operation["responses"]), key
        if key[0] == "POST" and key not in PUBLIC:
            assert "413" in operation["responses"], key


def test_every_operation_documents_the_bad_request_the_http_layer_may_answer_before_routing():
    """A malformed header (`Content_Length`, say) is refused with `400 bad_request` whatever the
    route; the fuzzer found an operation that did not list it."""
    for key, operation in operations().items():
        schema = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert "bad_request" in json.dumps(schema), key


def test_every_operation_that_reads_the_database_documents_503():
    """On PostgreSQL a read is 503 while the database is down or a lock (a migration's)
    outlasts the busy timeout: the GETs did not list it. `/health` says 503 too, once the
    server found its SQLite file damaged. Only the document, made without it, cannot."""
    for key, operation in operations().items():
        assert ("503" in operation["responses"]) is (key != ("GET", "/openapi.json")), key


def test_every_error_answer_is_documented_with_the_error_schema():
    for key, operation in operations().items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert {"$ref": "#/components/schemas/Error"} in schema["allOf"], (key, status)


def test_every_error_of_the_code_is_documented_with_its_status():
    """Each class of the error table (web/errors.py STATUS) has its code in the Error
    schema and a row with its status in the README's error table."""
    readme = (Path(chargebox.__file__).parent.parent / "README.md").read_text("utf-8")
    rows = set(re.findall(r"^\| (\d{3}) \| `(\w+)` \|", readme, re.MULTILINE))
    enum = DOC["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]
    for error, status in STATUS.items():
        assert error.code in enum["enum"], error
        assert (str(status), error.code) in rows, error


def test_documented_limits_match_the_code_defaults():
    schemas, params = DOC["components"]["schemas"], DOC["components"]["parameters"]
    for name in ("NewSale", "NewCreditRequest", "NewAdjustment"):
        assert schemas[name]["properties"]["amount"]["maximum"] == DEFAULT_MAX_AMOUNT
        assert schemas[name]["additionalProperties"] is False
    assert params["Limit"]["schema"]["maximum"] == MAX_LIMIT
    assert params["Limit"]["schema"]["default"] == DEFAULT_LIMIT


def test_the_server_serves_exactly_this_document(server):
    served = requests.get(server.url + "/openapi.json", timeout=30)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == DOC


def test_real_answers_of_a_sellers_day_fit_the_documented_schemas(server, admin):
    created = admin.post("/api/sellers", {"name": "  Openapi Shop  "})
    seller = conforms(created, "/api/sellers")
    assert created.status_code == 201 and seller["name"] == "Openapi Shop"
    own = Api(server.url, seller["api_key"])
    assert conforms(own.get("/api/me"), "/api/me")["balance"] == 0
    asked = own.post("/api/credit-requests", {"amount": 50_000})
    assert asked.status_code == 201
    request_id = conforms(asked, "/api/credit-requests")["id"]
    approved = admin.post(f"/api/credit-requests/{request_id}/approve")
    assert conforms(approved, "/api/credit-requests/{id}/approve")["status"] == "approved"
    sale_body = {"phone": "+98 ۹۱۲-۱۲۳-۴۵۶۷", "amount": 1_000}
    sold = own.post("/api/sales", sale_body, headers={"Idempotency-Key": "openapi-1"})
    assert sold.status_code == 201 and conforms(sold, "/api/sales")["phone"] == "09121234567"
    again = own.post("/api/sales", sale_body, headers={"Idempotency-Key": "openapi-1"})
    assert conforms(again, "/api/sales") == sold.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert conforms(own.get(f"/api/sales/{sold.json()['id']}"), "/api/sales/{id}")
    adjusted = admin.post(
        f"/api/sellers/{seller['id']}/adjustments", {"amount": -500, "reason": "refund fee"}
    )
    assert adjusted.status_code == 201
    assert conforms(adjusted, "/api/sellers/{id}/adjustments")["kind"] == "adjustment"
    assert conforms(admin.get(f"/api/sellers/{seller['id']}"), "/api/sellers/{id}")
    mine = f"?seller_id={seller['id']}"
    for api, path, query in (
        (own, "/api/sales", ""),
        (own, "/api/ledger", ""),
        (admin, "/api/ledger", mine),
        (own, "/api/credit-requests", ""),
        (admin, "/api/credit-requests", mine + "&status=approved"),
        (admin, "/api/phones", ""),
        (admin, "/api/sellers", "?limit=1000"),
    ):
        listed = api.get(path + query)
        assert listed.status_code == 200 and conforms(listed, path)["items"], (path, query)
    kinds = [entry["kind"] for entry in own.get("/api/ledger").json()["items"]]
    assert kinds == ["credit", "sale", "adjustment"]
    made = admin.post(f"/api/sellers/{seller['id']}/keys", {"label": "till 2"})
    assert conforms(made, "/api/sellers/{id}/keys")["label"] == "till 2"
    rotated = admin.post(f"/api/sellers/{seller['id']}/keys/{made.json()['id']}/rotate")
    assert conforms(rotated, "/api/sellers/{id}/keys/{key_id}/rotate")["label"] == "till 2"
    assert (
        made.headers["Location"]
        == rotated.headers["Location"]
        == f"/api/sellers/{seller['id']}/keys"
    )
    registered = admin.post("/api/phones", {"number": "0935 000 1122"})
    assert registered.status_code == 201 and conforms(registered, "/api/phones")
    existing = admin.post("/api/phones", {"number": "989350001122"})
    assert existing.status_code == 200 and conforms(existing, "/api/phones") == registered.json()
    assert conforms(admin.get("/api/audit"), "/api/audit")["consistent"] is True
    own.close()


def test_real_error_answers_fit_the_documented_error_schemas(server, admin):
    seller, key = new_seller(admin, "Openapi Errors", credit=1_000)
    other, other_key = new_seller(admin, "Openapi Other", credit=1_000)
    own, anonymous = server.seller(key), Api(server.url)
    other_sale = (
        server.seller(other_key).post("/api/sales", {"phone": "09120000001", "amount": 10}).json()
    )
    assert error_code(anonymous.get("/api/me"), "/api/me") == "unauthorized"
    assert error_code(Api(server.url, "nope").get("/api/ledger"), "/api/ledger") == "unauthorized"
    assert error_code(own.get("/api/sellers"), "/api/sellers") == "forbidden"
    assert error_code(admin.get("/api/me"), "/api/me") == "forbidden"
    # The key is checked before the role: a suspended seller's is refused so on the
    # admin's routes too (the document allowed only `forbidden` there: helper-111).
    suspended, suspended_key = new_seller(admin, "Openapi Suspended", credit=10)
    assert admin.post(f"/api/sellers/{suspended['id']}/suspend").status_code == 200
    for path in ("/api/sellers", "/api/audit"):
        refused = server.seller(suspended_key).get(path)
        assert error_code(refused, path) == "seller_suspended"
    assert error_code(own.get(f"/api/sales?seller_id={other['id']}"), "/api/sales") == "forbidden"
    assert error_code(admin.get("/api/sellers/999999999999"), "/api/sellers/{id}") == "not_found"
    assert error_code(own.get(f"/api/sales/{other_sale['id']}"), "/api/sales/{id}") == "not_found"
    too_much = own.post("/api/sales", {"phone": "09121112233", "amount": 5_000})
    assert too_much.status_code == 409
    assert error_code(too_much, "/api/sales") == "insufficient_credit"
    asked = own.post("/api/credit-requests", {"amount": 5}).json()
    admin.post(f"/api/credit-requests/{asked['id']}/reject")
    twice = admin.post(f"/api/credit-requests/{asked['id']}/approve")
    assert error_code(twice, "/api/credit-requests/{id}/approve") == "not_pending"
    floaty = own.post("/api/credit-requests", {"amount": 1e3})
    assert floaty.status_code == 422 and floaty.json()["error"]["field"] == "amount"
    assert error_code(floaty, "/api/credit-requests") == "validation_error"
    assert error_code(own.get("/api/ledger?page=2"), "/api/ledger") == "validation_error"
    own.post("/api/sales", {"phone": "09121112233", "amount": 1}, headers={"Idempotency-Key": "k"})
    reused = own.post(
        "/api/sales", {"phone": "09121112233", "amount": 2}, headers={"Idempotency-Key": "k"}
    )
    assert error_code(reused, "/api/sales") == "idempotency_key_reused"
    broken = own.request(
        "POST", "/api/sales", data=b'{"phone": ', headers={"Content-Type": "application/json"}
    )
    assert error_code(broken, "/api/sales") == "malformed_json"
    huge = own.post("/api/sales", {"phone": "0912" + " " * 70_000, "amount": 1})
    assert huge.status_code == 413 and error_code(huge, "/api/sales") == "payload_too_large"
    error_schema = {"$ref": f"{URI}#/components/schemas/Error"}
    for response, code in (
        (admin.get("/api/nowhere"), "not_found"),
        (admin.request("DELETE", "/api/sales"), "method_not_allowed"),
    ):
        validate_instance(response.json(), error_schema, cls=OAS31Validator, registry=REGISTRY)
        assert response.json()["error"]["code"] == code
    for api in (own, anonymous):
        api.close()
