"""The admin's web pages: pending credit requests, sellers, adjustments, refunds, keys, audit.

Like the seller's pages (see `pages`), each form calls one use case and answers
with a 303; a refusal is shown again beside the field. Only a session signed in
with the admin token opens these pages; a seller's session gets a 403 page.
Every pending request is reachable: the queue is counted, paged and filtered by seller.
A refund is asked for from the seller's page and done only from its confirmation page.
A notice is a fixed sentence of the catalogue (`N_`) filled in the request's language.
"""

from __future__ import annotations

import urllib.parse

import bottle

from chargebox.errors import ChargeboxError
from chargebox.queries import Page
from chargebox.web.errors import status_of
from chargebox.web.forms import Form, Site, form_key, found, plain
from chargebox.web.html import STATUSES, gettext, isolate, language, redirect, render
from chargebox.web.i18n import N_
from chargebox.web.request import query_id
from chargebox.web.sessions import Visitor, visitor

ID = "<ident:re:[0-9]{1,18}>"
ADMIN = "admin"
SELLERS_PER_PAGE = 50
PENDING_PER_PAGE = 100
DECIDED = {"approve": "approved", "reject": "rejected"}
# What a seller's page says after a form of its "Access" card (?done=...); fixed texts only.
ACCESS_DONE = {
    "suspended": N_("Suspended: its keys and sessions are refused. No money moved."),
    "active": N_("Reactivated: its keys work again."),
    "revoked": N_("Key revoked: it is refused from now on, on every server."),
}
# What a seller's page says after an adjustment or a refund (?adjusted=, ?refunded=).
MONEY_DONE = {
    "adjustment": N_("Adjusted by {amount} toman ({reason}). Balance now {balance}."),
    "refund": N_("Sale refunded: {amount} toman ({reason}). Balance now {balance}."),
}


def queue_url(path: str, **params: int | None) -> str:
    """`path` with the admin queue's view (seller filter, cursor) in its query string."""
    query = urllib.parse.urlencode({name: v for name, v in params.items() if v})
    return f"{path}?{query}" if query else path


def install(pages: bottle.Bottle, site: Site) -> None:
    # --- the admin's pages -----------------------------------------------------------------

    def pending_queue() -> dict:
        """One page of the pending requests (of one seller with ?seller_id=), how many wait
        per seller, and links that page on from ?pending_after=: every one is reachable."""
        seller_id, after = query_id("seller_id"), query_id("pending_after") or 0
        counts = site.service.queries.pending_by_seller()
        if seller_id and seller_id not in {row["seller_id"] for row in counts}:
            shown = found(site.service.queries.seller, seller_id)  # none waiting, or no such seller
            counts.append({"seller_id": seller_id, "name": shown and shown["name"], "pending": 0})
        page = Page(limit=PENDING_PER_PAGE + 1, after_id=after)  # one more: is there a next?
        pending = site.service.queries.credit_requests(page, seller_id=seller_id, status="pending")
        names = {row["seller_id"]: row["name"] for row in counts}
        for request in pending:  # filed after the counts were read
            if request["seller_id"] not in names:
                seller = site.service.queries.seller(request["seller_id"])
                names[request["seller_id"]] = seller["name"]

        def link(cursor: int | None) -> str:
            return queue_url("/admin", seller_id=seller_id, pending_after=cursor)

        more, pending = len(pending) > PENDING_PER_PAGE, pending[:PENDING_PER_PAGE]
        return {
            "pending": pending,
            "names": names,
            "counts": counts,
            "total": sum(row["pending"] for row in counts),
            "of_seller": next((row for row in counts if row["seller_id"] == seller_id), None),
            "first_url": link(None) if after else None,
            "next_url": link(pending[-1]["id"]) if more else None,
            "view": queue_url("", seller_id=seller_id, pending_after=after),
        }

    def admin_page(
        you: Visitor, status: int = 200, create: Form | None = None, problem: str | None = None
    ) -> bottle.HTTPResponse:
        after_id = query_id("after_id") or 0
        sellers = site.service.queries.sellers(Page(limit=SELLERS_PER_PAGE, after_id=after_id))
        notice, speaking = None, language()
        if status == 200:  # a notice says what the last form did; a refused one did nothing
            for word in DECIDED.values():
                decided = found(site.service.queries.credit_request, query_id(word))
                if decided:
                    notice = speaking.gettext(
                        "Credit request #{request} for {amount} from seller #{seller} is {status}."
                    ).format(
                        request=speaking.plain_number(decided["id"]),
                        amount=speaking.toman(decided["amount"]),
                        seller=speaking.plain_number(decided["seller_id"]),
                        status=speaking.gettext(STATUSES[decided["status"]]),
                    )
        return render(
            "admin",
            status,
            title=gettext("Admin"),
            visitor=you,
            per_page=PENDING_PER_PAGE,
            isolate=isolate,
            **pending_queue(),
            sellers=sellers,
            after_id=after_id,
            next_after=sellers[-1]["id"] if len(sellers) == SELLERS_PER_PAGE else None,
            create=create or Form(),
            problem=problem,
            notice=notice,
        )

    @pages.get("/admin")
    def admin_home():
        return admin_page(visitor(site.service, ADMIN))

    @pages.post(f"/admin/credit-requests/{ID}/<decision:re:approve|reject>")
    def decide(ident, decision):
        you, _ = site.posted(ADMIN)
        act = (
            site.service.approve_credit_request
            if decision == "approve"
            else site.service.reject_credit_request
        )
        try:
            act(int(ident))
        except ChargeboxError as exc:
            return admin_page(you, status_of(exc), problem=plain(exc))
        # Back to the same view of the queue (its seller filter and page), with the notice.
        view = {"seller_id": query_id("seller_id"), "pending_after": query_id("pending_after")}
        return redirect(queue_url("/admin", **{DECIDED[decision]: int(ident), **view}))

    @pages.post("/admin/sellers")
    def create_seller():
        you, form = site.posted(ADMIN)
        try:
            seller, api_key = site.service.create_seller(form.get("name", ""))
        except ChargeboxError as exc:
            return admin_page(you, status_of(exc), create=Form(form).failed(exc, "name"))
        return render(
            "seller_created",
            201,
            title=gettext("Seller created"),
            visitor=you,
            seller=seller,
            api_key=api_key,
        )

    def seller_detail(
        you: Visitor, seller_id: int, status: int = 200, adjust: Form | None = None,
        key_form: Form | None = None, problem: str | None = None, statement: Form | None = None,
    ) -> bottle.HTTPResponse:  # fmt: skip
        seller = site.service.queries.seller(seller_id)  # an unknown seller: a 404 page, not a form
        entries = site.service.queries.recent_ledger(seller_id, 50)
        done = {"adjustment": query_id("adjusted"), "refund": query_id("refunded")}
        speaking = language()
        notice = next(
            (
                speaking.gettext(MONEY_DONE[entry["kind"]]).format(
                    amount=speaking.signed(entry["amount"]),
                    reason=isolate(entry["reason"]),
                    balance=speaking.toman(entry["balance_after"]),
                )
                for entry in entries
                if status == 200 and entry["id"] == done.get(entry["kind"])
            ),
            None,
        )
        access_done = ACCESS_DONE.get(bottle.request.query.get("done", ""))
        return render(
            "admin_seller",
            status,
            title=gettext("Seller"),
            visitor=you,
            seller=seller,
            entries=entries,
            refundable=True,
            requests=site.service.queries.recent_credit_requests(seller_id),
            adjust=adjust or Form(),
            form_key=form_key(),
            notice=notice
            or (speaking.gettext(access_done) if access_done and status == 200 else None),
            keys=site.service.queries.seller_keys(seller_id),
            key_form=key_form or Form(),
            problem=problem,
            statement=statement or Form(),
        )

    @pages.get(f"/admin/sellers/{ID}/statement")
    def statement_for_admin(ident):
        you = visitor(site.service, ADMIN)
        return site.statement(
            int(ident), lambda status, form: seller_detail(you, int(ident), status, statement=form)
        )

    @pages.get(f"/admin/sellers/{ID}")
    def seller_page_for_admin(ident):
        return seller_detail(visitor(site.service, ADMIN), int(ident))

    @pages.post(f"/admin/sellers/{ID}/adjustments")
    def adjust(ident):
        return site.money_form(
            ADMIN,
            lambda you, form, amount, key: site.service.adjust_balance(
                int(ident), amount, form.get("reason", ""), key
            ),
            again=lambda you, status, form: seller_detail(you, int(ident), status, form),
            done=f"/admin/sellers/{ident}?adjusted=",
            signed=True,
        )

    def refund_page(
        you: Visitor, sale_id: int, status: int = 200, form: Form | None = None
    ) -> bottle.HTTPResponse:
        """The confirmation step: the sale, and a form that refunds it (none once refunded)."""
        sale = site.service.queries.sale(sale_id)  # an unknown sale: the 404 page
        return render(
            "refund",
            status,
            title=gettext("Refund a sale"),
            visitor=you,
            sale=sale,
            seller=site.service.queries.seller(sale["seller_id"]),
            refund=form or Form(),
            form_key=form_key(),
        )

    @pages.get(f"/admin/sales/{ID}/refund")
    def confirm_refund(ident):
        return refund_page(visitor(site.service, ADMIN), int(ident))

    @pages.post(f"/admin/sales/{ID}/refund")
    def refund(ident):
        you, form = site.posted(ADMIN)
        try:
            made = site.service.refund(
                int(ident), form.get("reason", ""), form.get("idempotency_key") or None
            )
        except ChargeboxError as exc:
            return refund_page(you, int(ident), status_of(exc), Form(form).failed(exc, "reason"))
        return redirect(f"/admin/sellers/{made.record['seller_id']}?refunded={made.record['id']}")

    @pages.post(f"/admin/sellers/{ID}/<change:re:suspend|reactivate>")
    def set_status(ident, change):
        you, _ = site.posted(ADMIN)
        status = "suspended" if change == "suspend" else "active"
        site.service.set_status(int(ident), status)  # an unknown seller: the 404 page
        return redirect(f"/admin/sellers/{ident}?done={status}")

    @pages.post(f"/admin/sellers/{ID}/keys")
    def create_key(ident):
        you, form = site.posted(ADMIN)
        try:
            key, api_key = site.service.create_key(int(ident), form.get("label", ""))
        except ChargeboxError as exc:
            failed = Form(form).failed(exc, "label")
            return seller_detail(you, int(ident), status_of(exc), key_form=failed)
        return _key_shown(you, key, api_key)

    @pages.post(f"/admin/sellers/{ID}/keys/<key_id:re:[0-9]{{1,18}}>/<change:re:revoke|rotate>")
    def change_key(ident, key_id, change):
        you, _ = site.posted(ADMIN)
        try:
            if change == "revoke":
                site.service.revoke_key(int(ident), int(key_id))
                return redirect(f"/admin/sellers/{ident}?done=revoked")
            key, api_key = site.service.rotate_key(int(ident), int(key_id))
        except ChargeboxError as exc:
            return seller_detail(you, int(ident), status_of(exc), problem=plain(exc))
        return _key_shown(you, key, api_key)

    def _key_shown(you: Visitor, key: dict, api_key: str) -> bottle.HTTPResponse:
        seller = site.service.queries.seller(key["seller_id"])
        return render("seller_created", 201, title=gettext("New key"), visitor=you, seller=seller,
                      api_key=api_key, key=key)  # fmt: skip

    @pages.get("/admin/audit")
    def audit():
        you = visitor(site.service, ADMIN)
        full = bottle.request.query.get("full") == "true"
        result = site.service.audit(full=full)
        return render("audit", title=gettext("Audit"), visitor=you, result=result)
