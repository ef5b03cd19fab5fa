"""The web pages: signing in and out, the language switch, and the seller's pages; the
admin's are in admin_pages.

Each handler reads a form, calls one use case (the same ones the JSON API calls)
and answers with a 303 to the next page, so that a reload sends nothing again.
A refused form is shown again with what was typed and the reason beside the
field. The sell and credit forms carry their own Idempotency-Key (a double click or
a browser's retry of the same form sells once) and go through `Site.money_form`.
Failed sign-ins are counted per client address (throttle.py), and too many are a 429.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse

import bottle
import jdatetime

from chargebox import periods
from chargebox.auth import SESSION_LIFETIME
from chargebox.config import Config
from chargebox.errors import ChargeboxError, TooManySignIns, Unauthorized, ValidationError
from chargebox.phones import normalize_phone
from chargebox.queries import Page
from chargebox.services import Chargebox
from chargebox.web import admin_pages, chart_pages, i18n
from chargebox.web.errors import status_of
from chargebox.web.forms import Form, Site, form_key, found
from chargebox.web.html import NOT_A_PAGE, STATIC, failure_page, gettext, language, redirect, render
from chargebox.web.refusals import FIND_A_SALE
from chargebox.web.request import SALE_SEARCH, query, query_id, read_form
from chargebox.web.sessions import (
    Visitor,
    check_login_token,
    end_session,
    login_token,
    remember_language,
    remember_login_token,
    session_sent,
    signed_in,
    start_session,
    visitor,
)
from chargebox.web.throttle import SignInThrottle

ADMIN, SELLER = admin_pages.ADMIN, "seller"
HOME = {ADMIN: "/admin", SELLER: "/seller"}
FOUND = 100  # sales a search shows
STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8",
                "woff2": "font/woff2", "txt": "text/plain; charset=utf-8"}  # fmt: skip
# What /static/ serves. The font's name carries its version, so it may be kept a year; the
# stylesheet and the script change with chargebox under the same names: five minutes.
FONT = "vazirmatn-nl-33.0.3.woff2"
STATIC_FILES = {"app.css": 300, "app.js": 300, FONT: 31_536_000, "vazirmatn-33.0.3-OFL.txt": 86_400}
# Where the language switch may send a browser back to: a path of this site, never
# `//host`, `/\host` (read as `//host` by browsers), a scheme, or control characters.
# A path of this site: a slash, not a second one (`//host`), then printable ASCII without
# a backslash (`/\host` is another host to some browsers).
LOCAL_PATH = re.compile(r"/(?!/)[\x21-\x5b\x5d-\x7e]{0,2000}")


def local_path(back: str) -> str:
    """`back` if it is a path of this site (printable ASCII, no backslash), else `/`."""
    return back if LOCAL_PATH.fullmatch(back) else "/"


def in_language(back: str, code: str) -> str:
    """`back` for a page in `code`: a search's typed bounds (`from`, `to`) written as that
    page's form types them (each language's its own way: searched_time), so that the
    switch comes back to the same sales; one this page's form does not read, as it was."""
    path, _, asked = back.partition("?")
    if path != "/seller/sales/found" or code == language().code:
        return back
    pairs = urllib.parse.parse_qsl(asked, keep_blank_values=True)
    retyped = [(name, _retyped(name, text, code)) for name, text in pairs]
    return f"{path}?{urllib.parse.urlencode(retyped)}"


def _retyped(name: str, text: str, code: str) -> str:
    if name not in ("from", "to") or not text.strip():
        return text
    try:
        moment = periods.instant(searched_time(text, name), name).astimezone(periods.TEHRAN)
        day = jdatetime.date.fromgregorian(date=moment.date())
    except (ChargeboxError, ValueError, OverflowError):
        return text
    clock = f"{moment:%H:%M:%S}".removesuffix(":00")
    if code == "fa":
        return f"{day.year:04d}/{day.month:02d}/{day.day:02d} {clock}"
    return f"{moment:%Y-%m-%d}T{clock}"


def searched_time(text: str, name: str) -> str:
    """A search's bound as its form sends it: on a Persian page a Jalali date, with a time
    of day if need be, typed (periods.jalali_instant; `to` a date alone: up to that day's
    end); on an English page a browser's `datetime-local`; both in Tehran time."""
    if language().code == "fa":
        return periods.jalali_instant(text, name, through_the_day=name == "to")
    return periods.tehran_if_naive(text, name)


def install(pages: bottle.Bottle, config: Config, service: Chargebox) -> None:
    site = Site(service, config.max_body_bytes)
    _install_common(pages, site)
    _install_seller(pages, site)
    admin_pages.install(pages, site)
    chart_pages.install(pages, site)


def _install_common(pages: bottle.Bottle, site: Site) -> None:
    static = {name: (STATIC / name).read_bytes() for name in STATIC_FILES}

    names = "|".join(re.escape(name) for name in STATIC_FILES)

    @pages.get(f"/static/<name:re:(?:{names})>")
    def static_file(name):
        response = bottle.HTTPResponse(static[name], 200)
        response.content_type = STATIC_TYPES[name.rpartition(".")[2]]
        response.set_header("Cache-Control", f"public, max-age={STATIC_FILES[name]}")
        return response

    @pages.get("/")
    def home():
        return redirect(HOME.get(site.current_role(), "/login"))

    @pages.get("/language/<code>")
    def choose_language(code):
        """Remember the visitor's language and go back to where it was (no script needed)."""
        if code not in i18n.LANGUAGES:
            return failure_page(site.service, 404, gettext(NOT_A_PAGE[404]))
        response = redirect(in_language(local_path(bottle.request.query.get("back", "/")), code))
        remember_language(response, code)
        return response

    # --- signing in and out ------------------------------------------------------------------

    def login_page(form: Form, status: int = 200, signed_out: bool = False,
                   ended: bool = False) -> bottle.HTTPResponse:  # fmt: skip
        token = login_token()
        notice = gettext("You have signed out.") if signed_out else None
        if ended:  # a page's session was refused: nothing it was sending was done
            notice = gettext("Your session has ended: sign in again. What you were sending "
                             "was not done.")  # fmt: skip
        response = render("login", status, title=gettext("Sign in"), form=form, csrf=token,
                          notice=notice)  # fmt: skip
        remember_login_token(response, token)
        return response

    @pages.get("/login")
    def login_form():
        role = site.current_role()
        said = bottle.request.query  # a fixed notice, no echo
        signed_out, ended = said.get("signed_out") == "1", said.get("ended") == "1"
        return redirect(HOME[role]) if role else login_page(Form(), signed_out=signed_out,
                                                            ended=ended)  # fmt: skip

    throttle = SignInThrottle()  # this process's, shared by its threads

    @pages.post("/login")
    def login():
        address = bottle.request.environ.get("REMOTE_ADDR", "-")  # a trusted proxy's client
        with throttle.attempt(address) as (wait, at_once):  # counted while its key is checked
            if not wait:
                return signing_in(address)
        # refused before anything is read: its token is not checked
        if at_once:
            refused = TooManySignIns(
                "too many sign-ins at once from your address: try again in a second"
            )
        else:
            refused = TooManySignIns(
                "too many failed sign-ins from your address: try again in {seconds:,} seconds",
                seconds=wait,
            )
        response = login_page(Form({"token": ""}).failed(refused, "token"), 429)
        response.set_header("Retry-After", str(wait))
        return response

    def signing_in(address: str) -> bottle.BaseResponse:
        form = read_form(site.limit)
        check_login_token(form)
        try:
            session, principal = site.service.access.sign_in(form.get("token", ""))
        except Unauthorized:
            blank = not form.get("token", "").strip()
            if not blank:  # a wrong key, not an empty field
                throttle.failed(address)
            message = (
                gettext("Enter your API key.")
                if blank
                else gettext("That key is not known. Check it.")
            )
            return login_page(Form(errors={"token": message}), 401)
        except ChargeboxError as exc:  # the typed secret is never shown back
            return login_page(Form({"token": ""}).failed(exc, "token"), status_of(exc))
        response = redirect(HOME[principal.role])
        start_session(response, session, int(SESSION_LIFETIME.total_seconds()))
        return response

    @pages.post("/logout")
    def logout():
        """Signs out; a session that has ended already (signed out in another tab, expired)
        is signed out all the same, not "what you were sending was not done"."""
        if signed_in(site.service) is not None or not session_sent():
            you, _ = site.posted(ADMIN, SELLER)  # its CSRF token, as every form's
            site.service.access.sign_out(you.session)
        response = redirect("/login?signed_out=1")
        end_session(response)
        return response


def _install_seller(pages: bottle.Bottle, site: Site) -> None:
    # --- a seller's pages ------------------------------------------------------------------

    def seller_page(you: Visitor, status: int = 200, **forms: Form) -> bottle.HTTPResponse:
        seller_id = you.principal.seller_id
        return render(
            "seller",
            status,
            title=gettext("Your account"),
            visitor=you,
            seller=site.service.queries.seller(seller_id),
            entries=site.service.queries.recent_ledger(seller_id),
            requests=site.service.queries.recent_credit_requests(seller_id),
            sale=forms.get("sale", Form()),
            credit=forms.get("credit", Form()),
            statement=forms.get("statement", Form()),
            sale_key=form_key(),
            credit_key=form_key(),
            notice=None if status != 200 else seller_notice(seller_id),
        )

    def seller_notice(seller_id: int) -> str | None:
        speaking = language()
        sale = found(site.service.queries.sale, query_id("sold"))
        if sale and sale["seller_id"] == seller_id:
            return speaking.gettext(
                "Sold {amount} of charge to {phone}. Balance after the sale: {balance}."
            ).format(
                amount=speaking.toman(sale["amount"]),
                phone=speaking.digits(sale["phone"]),
                balance=speaking.toman(sale["balance_after"]),
            )
        request = found(site.service.queries.credit_request, query_id("requested"))
        if request and request["seller_id"] == seller_id:
            return speaking.gettext(
                "Credit request #{request} for {amount} is sent; "
                "the admin will approve or reject it."
            ).format(
                request=speaking.plain_number(request["id"]),
                amount=speaking.toman(request["amount"]),
            )
        return None

    @pages.get("/seller")
    def seller_home():
        return seller_page(visitor(site.service, SELLER))

    @pages.get("/seller/statement")
    def seller_statement():
        you = visitor(site.service, SELLER)
        return site.statement(
            you.principal.seller_id, lambda status, form: seller_page(you, status, statement=form)
        )

    @pages.get("/seller/sales/found")
    def find_sales():
        """The seller's sales that match, FOUND a page, newest first, each page linking the
        older ones from its last id (?before_id=): every match is reachable."""
        you = visitor(site.service, SELLER)
        asked = query("before_id", *SALE_SEARCH)
        typed = {name: text for name, text in asked.items() if text.strip() and name in SALE_SEARCH}
        search, sales, status = Form(dict(typed)), None, 200
        before = query_id("before_id") or None
        if typed:
            try:
                for name in ("from", "to"):
                    if name in typed:
                        typed[name] = searched_time(typed[name], name)
                # one more than shown: is there an older page?
                page = Page(FOUND + 1, before_id=before, newest_first=True)
                sales = site.service.find_sales(page, you.principal.seller_id, typed)
            except ChargeboxError as exc:
                search, status = search.failed(exc, "phone", FIND_A_SALE), status_of(exc)
        more = sales is not None and len(sales) > FOUND
        shown = None if sales is None else sales[:FOUND]
        ids = [sale["id"] for sale in shown or ()]
        orders = site.service.queries.order_ids(you.principal.seller_id, ids)

        def link(cursor: int | None) -> str:
            kept = {**search.values, **({"before_id": cursor} if cursor else {})}
            return "/seller/sales/found?" + urllib.parse.urlencode(kept)

        first = link(None) if before and shown is not None else None
        return render("sales_found", status, title=gettext("Find a sale"), visitor=you,
                      search=search, sales=shown, orders=orders, before=before, first_url=first,
                      older_url=link(shown[-1]["id"]) if more else None)  # fmt: skip

    @pages.post("/seller/sales")
    def sell():
        return site.money_form(
            SELLER,
            lambda you, form, amount, key: site.service.sell(
                you.principal.seller_id, form.get("phone", ""), amount, key, you.principal.key
            ),
            again=lambda you, status, form: seller_page(you, status, sale=_number_shown(form)),
            done="/seller?sold=",
        )

    @pages.post("/seller/credit-requests")
    def request_credit():
        return site.money_form(
            SELLER,
            lambda you, form, amount, key: site.service.request_credit(
                you.principal.seller_id, amount, key
            ),
            again=lambda you, status, form: seller_page(you, status, credit=form),
            done="/seller?requested=",
        )


def _number_shown(form: Form) -> Form:
    """A refused sale's form back with its number as a sale reads it, in the page's digits:
    typed in Arabic-Indic digits in groups (٠٩١٢ ٣٤٥ ٦٧٨٩), the left-to-right field
    shows the groups in reverse order (each a right-to-left number, by Unicode's bidi
    rules), and a clerk may "mend" it into a wrong number. One that does not read stays
    as typed, beside its error."""
    with contextlib.suppress(ValidationError):
        form.values["phone"] = language().digits(normalize_phone(form.value("phone")))
    return form
