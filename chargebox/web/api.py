"""The JSON routes of docs/api.md: each reads the request, calls one use case, shapes the answer.

No SQL and no arithmetic on money here; rules live in `services`. Each handler
returns (status, body[, headers]); the plugin in `web.app` turns that, or any
ChargeboxError, into a JSON response.
"""

from __future__ import annotations

import bottle

from chargebox import __version__, metrics, periods
from chargebox.auth import Principal
from chargebox.config import Config
from chargebox.errors import (
    DAMAGED,
    Damaged,
    NotFound,
    ValidationError,
)
from chargebox.idempotency import Outcome
from chargebox.services import Chargebox
from chargebox.web.request import (
    PAGING,
    SALE_SEARCH,
    caller,
    flag,
    header,
    idempotency_key,
    page,
    query,
    read_json,
    seller_scope,
    statement_client,
    statement_headers,
    wants_csv,
)

ID = "<ident:re:[0-9]{1,18}>"
ADMIN, SELLER = "admin", "seller"


def install(app: bottle.Bottle, config: Config, service: Chargebox, openapi: bytes) -> None:
    limit = config.max_body_bytes
    access = service.access

    @app.get("/health")
    def health():
        if service.damage() is not None:  # logged once, with the file's name
            raise Damaged(DAMAGED)
        return 200, {"status": "ok", "version": __version__}

    @app.get("/metrics")
    def metrics_text():
        caller(access, ADMIN)
        text, content_type = metrics.exposition(
            service.storage_bytes(), header("Accept"), service.guards_missing()
        )
        return 200, text, {"Content-Type": content_type}

    @app.get("/openapi.json")
    def openapi_document():
        return 200, openapi

    @app.post("/api/sellers")
    def create_seller():
        caller(access, ADMIN)
        body = read_json(limit, ("name",))
        seller, api_key = service.create_seller(body["name"])
        return 201, {**seller, "api_key": api_key}, _location("sellers", seller["id"])

    @app.get("/api/sellers")
    def list_sellers():
        caller(access, ADMIN)
        return 200, {"items": service.queries.sellers(page(query(*PAGING)))}

    @app.get(f"/api/sellers/{ID}")
    def get_seller(ident):
        caller(access, ADMIN)
        return 200, service.queries.seller(int(ident))

    # --- a seller's keys and its suspension (the admin's) ------------------------------------

    @app.get(f"/api/sellers/{ID}/keys")
    def list_keys(ident):
        caller(access, ADMIN)
        return 200, {"items": service.queries.seller_keys(int(ident), page(query(*PAGING)))}

    @app.post(f"/api/sellers/{ID}/keys")
    def create_key(ident):
        caller(access, ADMIN)
        body = read_json(limit, ("label",))
        key, api_key = service.create_key(int(ident), body["label"])
        return 201, {**key, "api_key": api_key}, _key_location(key)

    @app.post(f"/api/sellers/{ID}/keys/<key_id:re:[0-9]{{1,18}}>/revoke")
    def revoke_key(ident, key_id):
        caller(access, ADMIN)
        return 200, service.revoke_key(int(ident), int(key_id))

    @app.post(f"/api/sellers/{ID}/keys/<key_id:re:[0-9]{{1,18}}>/rotate")
    def rotate_key(ident, key_id):
        caller(access, ADMIN)
        made, api_key = service.rotate_key(int(ident), int(key_id))
        return 201, {**made, "api_key": api_key}, _key_location(made)

    @app.post(f"/api/sellers/{ID}/suspend")
    def suspend(ident):
        caller(access, ADMIN)
        return 200, service.set_status(int(ident), "suspended")

    @app.post(f"/api/sellers/{ID}/reactivate")
    def reactivate(ident):
        caller(access, ADMIN)
        return 200, service.set_status(int(ident), "active")

    @app.get("/api/me")
    def me():
        principal = caller(access, SELLER)
        return 200, service.queries.seller(principal.seller_id)

    @app.post("/api/credit-requests")
    def request_credit():
        principal = caller(access, SELLER)
        key = idempotency_key()
        body = read_json(limit, ("amount",))
        filed = service.request_credit(principal.seller_id, body["amount"], key)
        return _made(filed, _location("credit-requests", filed.record["id"]))

    @app.get("/api/credit-requests")
    def list_credit_requests():
        principal = caller(access, ADMIN, SELLER)
        params = query(*PAGING, "seller_id", "status")
        items = service.queries.credit_requests(
            page(params), seller_id=seller_scope(principal, params), status=params.get("status")
        )
        return 200, {"items": items}

    @app.get(f"/api/credit-requests/{ID}")
    def get_credit_request(ident):
        principal = caller(access, ADMIN, SELLER)
        return 200, _own(principal, service.queries.credit_request(int(ident)), "credit request")

    @app.post(f"/api/credit-requests/{ID}/approve")
    def approve(ident):
        caller(access, ADMIN)
        return 200, service.approve_credit_request(int(ident))

    @app.post(f"/api/credit-requests/{ID}/reject")
    def reject(ident):
        caller(access, ADMIN)
        return 200, service.reject_credit_request(int(ident))

    @app.post(f"/api/sellers/{ID}/adjustments")
    def adjust(ident):
        caller(access, ADMIN)
        key = idempotency_key()
        body = read_json(limit, ("amount", "reason"))
        return _made(service.adjust_balance(int(ident), body["amount"], body["reason"], key))

    @app.post("/api/sales")
    def sell():
        # The seller key is checked in the sale's own write; one seen before in this
        # process is not read first: one read less a sale (docs/performance.md). Should
        # anything refuse the sale, an unread key is read then, so its refusal comes
        # first, as ever.
        principal = caller(access, SELLER, remembered=True)
        try:
            key = idempotency_key()
            body = read_json(limit, ("phone", "amount"))
            sold = service.sell(principal.seller_id, body["phone"], body["amount"], key,
                                principal.key)  # fmt: skip
        except Exception:
            if principal.unchecked:
                caller(access, SELLER)
            raise
        return _made(sold, _location("sales", sold.record["id"]))

    @app.get("/api/sales")
    def list_sales():
        principal = caller(access, ADMIN, SELLER)
        params = query(*PAGING, "seller_id", *SALE_SEARCH)
        scope = seller_scope(principal, params)
        return 200, {"items": service.find_sales(page(params), scope, params)}

    @app.get(f"/api/sales/{ID}")
    def get_sale(ident):
        principal = caller(access, ADMIN, SELLER)
        return 200, _own(principal, service.queries.sale(int(ident)), "sale")

    @app.post(f"/api/sales/{ID}/refund")
    def refund(ident):
        caller(access, ADMIN)
        key = idempotency_key()
        body = read_json(limit, ("reason",))
        return _made(service.refund(int(ident), body["reason"], key))

    @app.get("/api/ledger")
    def list_ledger():
        principal = caller(access, ADMIN, SELLER)
        params = query(*PAGING, "seller_id")
        return 200, {"items": service.queries.ledger(page(params), seller_scope(principal, params))}

    @app.get("/api/statements")
    def statement():
        principal = caller(access, ADMIN, SELLER)
        params = query("seller_id", "format", *periods.NAMES)
        seller_id = seller_scope(principal, params)
        if seller_id is None:
            raise ValidationError("the admin names the seller: seller_id", "seller_id")
        fmt = params.get("format", "csv" if wants_csv(header("Accept")) else "json")
        rendered = service.statement(seller_id, params, fmt, client=statement_client())
        return 200, rendered, statement_headers(rendered)

    @app.get("/api/phones")
    def list_phones():
        caller(access, ADMIN)
        return 200, {"items": service.queries.phones(page(query(*PAGING)))}

    @app.post("/api/phones")
    def register_phone():
        caller(access, ADMIN)
        body = read_json(limit, ("number",))
        phone, created = service.register_phone(body["number"])
        return (201 if created else 200), phone

    @app.get("/api/audit")
    def audit():
        caller(access, ADMIN)
        return 200, service.audit(full=flag(query("full"), "full"))


def _own(principal: Principal, found: dict, what: str) -> dict:
    """A seller sees its own records; another seller's ids answer 404, revealing nothing."""
    if not principal.is_admin and found["seller_id"] != principal.seller_id:
        raise NotFound("{what} {ident} does not exist", what=what, ident=found["id"])
    return found


def _made(outcome: Outcome, headers: dict | None = None) -> tuple[int, dict, dict]:
    """201 with what a keyed write made; a replayed copy says so in a header."""
    headers = headers or {}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return 201, outcome.record, headers


def _key_location(key: dict) -> dict:
    return {"Location": f"/api/sellers/{key['seller_id']}/keys"}


def _location(collection: str, ident: int) -> dict:
    return {"Location": f"/api/{collection}/{ident}"}
