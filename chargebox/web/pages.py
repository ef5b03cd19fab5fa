"""The web pages for sellers' staff and the admin: server-rendered forms over `services`.

Each handler reads a form, calls one use case (the same ones the JSON API calls)
and answers with a 303 to the next page, so that a reload sends nothing again.
A refused form is shown again with what was typed and the reason beside the
field. The sell form carries its own Idempotency-Key: a double click or a
browser's retry of the same form sells once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import bottle

from chargebox.config import Config
from chargebox.errors import ChargeboxError, NotFound, Unauthorized
from chargebox.money import amount_from_text
from chargebox.services import SESSION_LIFETIME, Chargebox, Page
from chargebox.web.html import (
    SESSION_COOKIE,
    STATIC,
    Form,
    Visitor,
    check_csrf,
    check_login_token,
    end_session,
    login_token,
    read_form,
    redirect,
    remember_login_token,
    render,
    signed,
    start_session,
    status_of,
    toman,
    visitor,
)

ID = "<ident:re:[0-9]{1,18}>"
ADMIN, SELLER = "admin", "seller"
HOME = {ADMIN: "/admin", SELLER: "/seller"}
SELLERS_PER_PAGE = 50
DECIDED = {"approve": "approved", "reject": "rejected"}


def found(read: Callable[[int], dict], ident: int | None) -> dict | None:
    """The record a notice in the query string names, if it exists."""
    try:
        return None if ident is None else read(ident)
    except NotFound:
        return None


def query_id(name: str) -> int | None:
    """A positive id from the query string (a notice or a cursor); anything else is ignored."""
    text = bottle.request.query.get(name, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def install(pages: bottle.Bottle, config: Config, service: Chargebox) -> None:
    limit = config.max_body_bytes
    static = {name: (STATIC / name).read_bytes() for name in ("app.css", "app.js")}
    static_types = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}

    def posted(*roles: str) -> tuple[Visitor, dict[str, str]]:
        """The signed-in visitor and its form, once the form's CSRF token is checked."""
        you = visitor(service, *roles)
        form = read_form(limit)
        check_csrf(you.csrf, form)
        return you, form

    def current_role() -> str | None:
        principal = service.session_principal(bottle.request.get_cookie(SESSION_COOKIE))
        return principal.role if principal else None

    @pages.get("/static/<name:re:app\\.(css|js)>")
    def static_file(name):
        response = bottle.HTTPResponse(static[name], 200)
        response.content_type = static_types[name.rpartition(".")[2]]
        response.set_header("Cache-Control", "public, max-age=300")
        return response

    @pages.get("/")
    def home():
        return redirect(HOME.get(current_role(), "/login"))

    # --- signing in and out ------------------------------------------------------------------

    def login_page(form: Form, status: int = 200) -> bottle.HTTPResponse:
        token = login_token()
        response = render("login", status, title="Sign in", form=form, csrf=token)
        remember_login_token(response, token)
        return response

    @pages.get("/login")
    def login_form():
        role = current_role()
        return redirect(HOME[role]) if role else login_page(Form())

    @pages.post("/login")
    def login():
        form = read_form(limit)
        check_login_token(form)
        try:
            session, principal = service.sign_in(form.get("token", ""))
        except Unauthorized:
            blank = not form.get("token", "").strip()
            message = "Enter your API key." if blank else "That key is not known. Check it."
            return login_page(Form(errors={"token": message}), 401)
        except ChargeboxError as exc:  # the typed secret is never shown back
            return login_page(Form({"token": ""}).failed(exc, "token"), status_of(exc))
        response = redirect(HOME[principal.role])
        start_session(response, session, int(SESSION_LIFETIME.total_seconds()))
        return response

    @pages.post("/logout")
    def logout():
        you, _ = posted(ADMIN, SELLER)
        service.sign_out(you.session)
        response = redirect("/login")
        end_session(response)
        return response

    # --- a seller's pages ------------------------------------------------------------------

    def seller_page(you: Visitor, status: int = 200, **forms: Form) -> bottle.HTTPResponse:
        seller_id = you.principal.seller_id
        return render(
            "seller",
            status,
            title="Your account",
            visitor=you,
            seller=service.get_seller(seller_id),
            entries=service.recent_ledger(seller_id),
            requests=service.recent_credit_requests(seller_id),
            sale=forms.get("sale", Form()),
            credit=forms.get("credit", Form()),
            sale_key="web-" + secrets.token_urlsafe(18),
            notice=None if status != 200 else seller_notice(seller_id),
        )

    def seller_notice(seller_id: int) -> str | None:
        sale = found(service.get_sale, query_id("sold"))
        if sale and sale["seller_id"] == seller_id:
            return (
                f"Sold {toman(sale['amount'])} of charge to {sale['phone']}. "
                f"Balance after the sale: {toman(sale['balance_after'])}."
            )
        request = found(service.get_credit_request, query_id("requested"))
        if request and request["seller_id"] == seller_id:
            return (
                f"Credit request #{request['id']} for {toman(request['amount'])} is sent; "
                "the admin will approve or reject it."
            )
        return None

    @pages.get("/seller")
    def seller_home():
        return seller_page(visitor(service, SELLER))

    @pages.post("/seller/sales")
    def sell():
        you, form = posted(SELLER)
        try:
            amount = amount_from_text(form.get("amount", ""))
            key = form.get("idempotency_key") or None
            result = service.sell(you.principal.seller_id, form.get("phone", ""), amount, key)
        except ChargeboxError as exc:
            return seller_page(you, status_of(exc), sale=Form(form).failed(exc, "amount"))
        return redirect(f"/seller?sold={result.sale['id']}")

    @pages.post("/seller/credit-requests")
    def request_credit():
        you, form = posted(SELLER)
        try:
            amount = amount_from_text(form.get("amount", ""))
            created = service.request_credit(you.principal.seller_id, amount)
        except ChargeboxError as exc:
            return seller_page(you, status_of(exc), credit=Form(form).failed(exc, "amount"))
        return redirect(f"/seller?requested={created['id']}")

    # --- the admin's pages -----------------------------------------------------------------

    def admin_page(
        you: Visitor, status: int = 200, create: Form | None = None, problem: str | None = None
    ) -> bottle.HTTPResponse:
        pending = service.list_credit_requests(Page(limit=100), status="pending")
        after_id = query_id("after_id") or 0
        sellers = service.list_sellers(Page(limit=SELLERS_PER_PAGE, after_id=after_id))
        names = {}
        for request in pending:
            if request["seller_id"] not in names:
                names[request["seller_id"]] = service.get_seller(request["seller_id"])["name"]
        notice = None
        for word in DECIDED.values():
            decided = found(service.get_credit_request, query_id(word))
            if status == 200 and decided:
                notice = (
                    f"Credit request #{decided['id']} for {toman(decided['amount'])} "
                    f"from seller #{decided['seller_id']} is {decided['status']}."
                )
        return render(
            "admin",
            status,
            title="Admin",
            visitor=you,
            pending=pending,
            names=names,
            sellers=sellers,
            after_id=after_id,
            next_after=sellers[-1]["id"] if len(sellers) == SELLERS_PER_PAGE else None,
            create=create or Form(),
            problem=problem,
            notice=notice,
        )

    @pages.get("/admin")
    def admin_home():
        return admin_page(visitor(service, ADMIN))

    @pages.post(f"/admin/credit-requests/{ID}/<decision:re:approve|reject>")
    def decide(ident, decision):
        you, _ = posted(ADMIN)
        act = (
            service.approve_credit_request
            if decision == "approve"
            else service.reject_credit_request
        )
        try:
            act(int(ident))
        except ChargeboxError as exc:
            return admin_page(
                you, status_of(exc), problem=Form().failed(exc, "request").errors["request"]
            )
        return redirect(f"/admin?{DECIDED[decision]}={ident}")

    @pages.post("/admin/sellers")
    def create_seller():
        you, form = posted(ADMIN)
        try:
            seller, api_key = service.create_seller(form.get("name", ""))
        except ChargeboxError as exc:
            return admin_page(you, status_of(exc), create=Form(form).failed(exc, "name"))
        return render(
            "seller_created",
            201,
            title="Seller created",
            visitor=you,
            seller=seller,
            api_key=api_key,
        )

    def seller_detail(
        you: Visitor, seller_id: int, status: int = 200, adjust: Form | None = None
    ) -> bottle.HTTPResponse:
        entries = service.recent_ledger(seller_id, 50)
        adjusted = query_id("adjusted") if status == 200 else None
        notice = next(
            (
                f"Adjusted by {signed(entry['amount'])} toman ({entry['reason']}). "
                f"Balance now {toman(entry['balance_after'])}."
                for entry in entries
                if entry["id"] == adjusted and entry["kind"] == "adjustment"
            ),
            None,
        )
        return render(
            "admin_seller",
            status,
            title="Seller",
            visitor=you,
            seller=service.get_seller(seller_id),
            entries=entries,
            requests=service.recent_credit_requests(seller_id),
            adjust=adjust or Form(),
            notice=notice,
        )

    @pages.get(f"/admin/sellers/{ID}")
    def seller_page_for_admin(ident):
        return seller_detail(visitor(service, ADMIN), int(ident))

    @pages.post(f"/admin/sellers/{ID}/adjustments")
    def adjust(ident):
        you, form = posted(ADMIN)
        try:
            amount = amount_from_text(form.get("amount", ""), signed=True)
            entry = service.adjust_balance(int(ident), amount, form.get("reason", ""))
        except ChargeboxError as exc:
            service.get_seller(int(ident))  # an unknown seller is a 404 page, not a form error
            return seller_detail(you, int(ident), status_of(exc), Form(form).failed(exc, "amount"))
        return redirect(f"/admin/sellers/{ident}?adjusted={entry['id']}")

    @pages.get("/admin/audit")
    def audit():
        return render(
            "audit", title="Audit", visitor=visitor(service, ADMIN), result=service.audit()
        )
