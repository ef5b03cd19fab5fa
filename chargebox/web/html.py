"""What the HTML pages need around the use cases: sessions, CSRF, form bodies, templates.

No rule of the business lives here; the pages call the same `services` as the
JSON API. Every page is no-store, may not be framed, and runs under a
Content-Security-Policy that allows only our own stylesheet and script. A
failure is rendered as a page in plain words, never a stack trace.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import re
import secrets
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import bottle

from chargebox import auth
from chargebox.auth import Principal
from chargebox.config import Config
from chargebox.errors import ChargeboxError, Forbidden, NotFound, ValidationError
from chargebox.services import Chargebox
from chargebox.web.errors import internal_error, request_id, status_of
from chargebox.web.request import check_body_size, read_body

VIEWS = Path(__file__).parent / "views"
STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "chargebox_session"
# Before there is a session, the sign-in form is protected by a double-submit token.
LOGIN_COOKIE = "chargebox_login"
FORM_TYPE = "application/x-www-form-urlencoded"
HTML = "text/html; charset=utf-8"
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
# Plain words for what a person did not cause and cannot fix by retyping.
PLAIN = {
    "insufficient_credit": "Not enough credit: {message}.",
    "balance_limit_exceeded": "That would take the balance over the limit: {message}.",
    "unavailable": "The service is busy right now and nothing was changed. Try again.",
    "too_many_pending_requests": "You cannot ask for more credit yet: {message}.",
    "idempotency_key_reused": "This form was already sent with other values. Check and send again.",
}


class SignInRequired(Exception):
    """No valid session: the browser is sent to the sign-in page."""


@dataclasses.dataclass(frozen=True)
class Visitor:
    """A signed-in browser: who it acts as, its session cookie and its CSRF token."""

    principal: Principal
    session: str

    @property
    def csrf(self) -> str:
        return auth.csrf_token(self.session)


@dataclasses.dataclass
class Form:
    """What a person typed into one form and what was wrong with it, to show it back."""

    values: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, name: str) -> str | None:
        return self.errors.get(name)

    def failed(self, exc: ChargeboxError, field: str) -> Form:
        """Record `exc` next to its own field, or next to `field` when it names none."""
        self.errors[exc.field if exc.field in self.values else field] = plain(exc)
        return self


def plain(exc: ChargeboxError) -> str:
    """What went wrong, as a sentence for a person."""
    message = PLAIN.get(exc.code, "{message}").format(message=exc.message.rstrip("."))
    return message[:1].upper() + message[1:]


# --- rendering -------------------------------------------------------------------------------


def toman(amount: int) -> str:
    return f"{amount:,} toman"


def signed(amount: int) -> str:
    return f"+{amount:,}" if amount > 0 else f"\u2212{-amount:,}"


def isolate(text: str) -> str:
    """User text inside a sentence, wrapped in bidi isolates (FSI ... PDI) so that a
    right-to-left name or reason cannot reorder the words around it."""
    return f"\u2068{text}\u2069"


def when(stamp: str | None) -> str:
    """An ISO stamp as `2026-11-24 10:31 UTC`."""
    return f"{stamp[:10]} {stamp[11:16]} UTC" if stamp else ""


HELPERS = {"toman": toman, "signed": signed, "when": when, "visitor": None, "notice": None}


@functools.cache
def _template(name: str) -> bottle.SimpleTemplate:
    return bottle.SimpleTemplate(name=name, lookup=[str(VIEWS)])


def render(name: str, status: int = 200, **context: object) -> bottle.HTTPResponse:
    body = _template(name).render(**{**HELPERS, **context})
    response = bottle.HTTPResponse(body.encode("utf-8"), status)
    response.content_type = HTML
    return response


def redirect(location: str) -> bottle.HTTPResponse:
    """303 See Other: after a form is handled, a reload of the next page resends nothing."""
    return bottle.HTTPResponse(status=303, headers={"Location": location})


def error_page(status: int, message: str, visitor: Visitor | None = None) -> bottle.HTTPResponse:
    return render("error", status, title=f"Error {status}", message=message, visitor=visitor)


def failure_page(service: Chargebox, status: int, message: str) -> bottle.HTTPResponse:
    """An error page; a signed-in visitor keeps its menu and its way to sign out."""
    try:
        you = signed_in(service)
    except ChargeboxError:
        you = None
    return error_page(status, message, you)


# The JSON API's paths (web/api.py): their errors stay JSON whatever the client accepts.
API_ROOTS = ("/api", "/health", "/openapi.json")
# bottle's own refusals of a page address, in plain words.
NOT_A_PAGE = {
    404: "There is no page at this address. Check it for a typing mistake.",
    405: "This page cannot be opened that way.",
}


def wants_html(path: str, accept: str) -> bool:
    """A page address asked for by a browser: outside the API, and text/html preferred
    to JSON in Accept (a browser's; curl's */* and an API client's are not)."""
    if any(path == root or path.startswith(root + "/") for root in API_ROOTS):
        return False
    quality = {}
    for part in accept.lower().split(","):
        media, _, params = part.partition(";")
        q = re.search(r"(?:^|;)\s*q\s*=\s*([01](?:\.[0-9]{0,3})?)\s*(?:;|$)", params)
        quality[media.strip()] = float(q[1]) if q else 1.0
    return quality.get("text/html", 0.0) > quality.get("application/json", 0.0)


def not_a_page(service: Chargebox, error: bottle.HTTPError) -> bottle.HTTPResponse | None:
    """bottle's own 4xx (a mistyped page address, a wrong method) as the styled error page,
    with the pages' headers, when a browser asked for a page; None: answer it as JSON."""
    accept = bottle.request.environ.get("HTTP_ACCEPT", "")
    if not 400 <= error.status_code < 500 or not wants_html(bottle.request.path, accept):
        return None
    message = NOT_A_PAGE.get(error.status_code, "The request could not be handled.")
    response = failure_page(service, error.status_code, message)
    for name, value in HEADERS.items():
        response.set_header(name, value)
    return response


def page_plugin(config: Config, service: Chargebox):
    """Wrap a page: its response, or any error as a page in plain words."""

    def failed(status: int, message: str) -> bottle.HTTPResponse:
        return failure_page(service, status, message)

    def bug(exc: BaseException) -> bottle.HTTPResponse:
        """Logged without trace, answered without detail."""
        internal_error(exc)
        return error_page(500, f"Something went wrong (request {request_id()}).")

    def decorator(callback):
        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            request_id()
            try:
                if bottle.request.method == "POST":
                    check_body_size(config.max_body_bytes)
                response = callback(*args, **kwargs)
            except SignInRequired:
                response = redirect("/login")
            except ChargeboxError as exc:
                # A 500 here means a guard of the database fired: a bug, like any other.
                status = status_of(exc)
                response = bug(exc) if status == 500 else failed(status, exc.message)
            except bottle.HTTPError as exc:
                response = failed(exc.status_code, "The request could not be handled.")
            except Exception as exc:
                response = bug(exc)
            response.set_header("X-Request-Id", request_id())
            for name, value in HEADERS.items():
                if name not in response.headers:  # static files may be cached
                    response.set_header(name, value)
            return response

        return wrapper

    return decorator


# --- requests --------------------------------------------------------------------------------


def read_form(limit: int) -> dict[str, str]:
    """The urlencoded body of a form post; a repeated field keeps its first value."""
    if bottle.request.content_type.split(";")[0].strip().lower() != FORM_TYPE:
        raise ValidationError("the form was not sent as a web form")
    raw = read_body(limit)
    try:
        pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("the form could not be read") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def signed_in(service: Chargebox) -> Visitor | None:
    """The browser's valid session, if it has one."""
    session = bottle.request.get_cookie(SESSION_COOKIE)
    principal = service.access.session(session)
    return Visitor(principal, session) if principal else None


def visitor(service: Chargebox, *roles: str) -> Visitor:
    """The signed-in browser, if its session is valid and its role is one of `roles`."""
    you = signed_in(service)
    if you is None:
        raise SignInRequired
    if you.principal.role not in roles:
        raise Forbidden(
            "This page is for the admin; you are signed in as a seller."
            if "admin" in roles
            else "This page is for sellers; you are signed in as the admin."
        )
    return you


def check_csrf(expected: str, form: dict[str, str]) -> None:
    """Refuse a post whose form lacks this session's anti-forgery token (403)."""
    presented = form.get("csrf", "").encode("utf-8")
    if not expected or not hmac.compare_digest(presented, expected.encode("utf-8")):
        raise Forbidden(
            "This form has expired or did not come from this site. "
            "Nothing was changed: reload the page and try again."
        )


def _cookie(response: bottle.BaseResponse, name: str, value: str, max_age: int) -> None:
    secure = bottle.request.urlparts.scheme == "https"
    response.set_cookie(
        name, value, path="/", httponly=True, samesite="strict", secure=secure, max_age=max_age
    )


def start_session(response: bottle.BaseResponse, session: str, lifetime_s: int) -> None:
    _cookie(response, SESSION_COOKIE, session, lifetime_s)
    _cookie(response, LOGIN_COOKIE, "", 0)


def end_session(response: bottle.BaseResponse) -> None:
    _cookie(response, SESSION_COOKIE, "", 0)


def login_token() -> str:
    """The sign-in form's token: the browser's login cookie, or a new one."""
    token = bottle.request.get_cookie(LOGIN_COOKIE)
    return token if token and len(token) <= 64 else secrets.token_urlsafe(24)


def remember_login_token(response: bottle.BaseResponse, token: str) -> None:
    _cookie(response, LOGIN_COOKIE, token, 3600)


def check_login_token(form: dict[str, str]) -> None:
    check_csrf(bottle.request.get_cookie(LOGIN_COOKIE) or "", form)


@dataclasses.dataclass(frozen=True)
class Site:
    """What every page handler shares: the use cases and the body limit."""

    service: Chargebox
    limit: int

    def posted(self, *roles: str) -> tuple[Visitor, dict[str, str]]:
        """The signed-in visitor and its form, once the form's CSRF token is checked."""
        you = visitor(self.service, *roles)
        form = read_form(self.limit)
        check_csrf(you.csrf, form)
        return you, form

    def current_role(self) -> str | None:
        you = signed_in(self.service)
        return you.principal.role if you else None


def found(read: Callable[[int], dict], ident: int | None) -> dict | None:
    """The record a notice in the query string names, if it exists."""
    try:
        return None if ident is None else read(ident)
    except NotFound:
        return None


def form_key() -> str:
    """A fresh Idempotency-Key for a form that moves money: a double click or a
    browser's retry sends the same key again, and the copy is replayed, not redone."""
    return "web-" + secrets.token_urlsafe(18)


def query_id(name: str) -> int | None:
    """A positive id from the query string (a notice or a cursor); anything else is ignored."""
    text = bottle.request.query.get(name, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None
