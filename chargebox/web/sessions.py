"""Who a browser is: the session and login cookies, the signed-in Visitor, CSRF checks.

A page learns its visitor here and nowhere else, and every cookie we set is
httponly, SameSite=Strict and (over https) Secure; only the language cookie, a mere
preference, is SameSite=Lax, so a page opened from a link elsewhere keeps the language.
Over https the session and sign-in cookies are named `__Host-...`: a browser takes
such a cookie only from this host, so a sibling subdomain cannot plant one (its own
session, to sign a visitor in as itself; or the sign-in form's token, to match it).
Sessions themselves are kept, hashed, by `auth.Access`; this module holds only what
travels in the browser.
No rendering and no use case here: the pages call these, not the other way round.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import secrets

import bottle

from chargebox import auth
from chargebox.access_log import ENVIRON_WHO
from chargebox.auth import Principal
from chargebox.errors import Forbidden
from chargebox.services import Chargebox
from chargebox.web import i18n

SESSION_COOKIE = "chargebox_session"
# Before there is a session, the sign-in form is protected by a double-submit token.
LOGIN_COOKIE = "chargebox_login"
LANGUAGE_COOKIE = i18n.COOKIE
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")  # secrets.token_urlsafe(24)
HOST_ONLY = "__Host-"  # the prefix of a cookie only this host may set (Secure, Path=/)
_BLANK = " \t"  # what a browser may put around a cookie's name and value (RFC 6265)


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


def signed_in(service: Chargebox) -> Visitor | None:
    """The browser's valid session, if it has one."""
    session = cookie_sent(_named(SESSION_COOKIE))
    principal = service.access.session(session)
    if principal:
        bottle.request.environ[ENVIRON_WHO] = principal  # for the access log
    return Visitor(principal, session) if principal else None


def session_sent() -> bool:
    """Did the browser send a session cookie (valid or not)? One it sends that is no longer
    valid (expired, signed out elsewhere, its key revoked or its seller suspended) is a
    session that ended, not a visitor who never signed in."""
    return bool(cookie_sent(_named(SESSION_COOKIE)))


def visitor(service: Chargebox, *roles: str) -> Visitor:
    """The signed-in browser, if its session is valid and its role is one of `roles`."""
    you = signed_in(service)
    if you is None:
        raise SignInRequired
    if you.principal.role not in roles:
        if "admin" in roles:
            raise Forbidden("This page is for the admin; you are signed in as a seller.")
        raise Forbidden("This page is for sellers; you are signed in as the admin.")
    return you


# What a browser says of where a request came from (Sec-Fetch-Site): a form another
# site (or a sibling subdomain, which may set our cookies) sent is refused, whatever it holds.
_ELSEWHERE = frozenset({"cross-site", "same-site"})


def check_csrf(expected: str, form: dict[str, str]) -> None:
    """Refuse a post whose form lacks this session's anti-forgery token, or that the
    browser says another site sent (403). The second matters for the sign-in form,
    whose token is a double submit: whoever can plant a cookie could match it."""
    presented = form.get("csrf", "").encode("utf-8")
    environ = bottle.request.environ
    sent_from = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
    if (
        not expected
        or sent_from in _ELSEWHERE
        or (not sent_from and _from_another_origin(environ))
        or not hmac.compare_digest(presented, expected.encode("utf-8"))
    ):
        raise Forbidden(
            "This form has expired or did not come from this site. "
            "Nothing was changed: go back to the form, reload it and send it again."
        )


def _from_another_origin(environ: dict) -> bool:
    """A browser too old to send Sec-Fetch-Site (Safari before 16.4, Firefox before 90)
    still sends Origin with a post: over plain http, where a sibling subdomain can plant
    the sign-in cookie, one not this request's own (`null` too: our pages' Referrer-Policy
    sends it only cross-origin) is refused (helper-136). Over https the cookies are
    `__Host-`, which no other site can plant, and a proxy in front may have rewritten
    Host, so Origin is not compared there."""
    origin = environ.get("HTTP_ORIGIN", "").strip().lower()
    if not origin or bottle.request.urlparts.scheme != "http":
        return False
    return origin != "http://" + environ.get("HTTP_HOST", "").strip().lower()


def cookie_sent(name: str) -> str | None:
    """The cookie `name` as the browser sent it: the header's `;`-separated pairs, the name
    matched exactly; None if absent or sent twice (a host-only cookie is one per name).
    Not bottle's reading (http.cookies), which also splits at spaces: a sibling subdomain's
    cookie `a=x __Host-chargebox_session=S` (its value one with a space) read as ours.
    Only spaces and tabs are blanks here (`str.strip()` would also take the header's
    latin-1 0xA0 and 0x85, and a sibling's cookie named `\xa0__Host-...` would match)."""
    found = [
        pair.partition("=")[2].strip(_BLANK)
        for pair in bottle.request.environ.get("HTTP_COOKIE", "").split(";")
        if pair.partition("=")[0].strip(_BLANK) == name
    ]
    return found[0] if len(found) == 1 else None


def _named(name: str) -> str:
    """A session or sign-in cookie's name: host-only over https (plain http has none)."""
    return HOST_ONLY + name if bottle.request.urlparts.scheme == "https" else name


def _cookie(
    response: bottle.BaseResponse, name: str, value: str, max_age: int, samesite: str = "strict"
) -> None:
    secure = bottle.request.urlparts.scheme == "https"
    if name != LANGUAGE_COOKIE:
        name = _named(name)
    response.set_cookie(
        name, value, path="/", httponly=True, samesite=samesite, secure=secure, max_age=max_age
    )


def remember_language(response: bottle.BaseResponse, code: str) -> None:
    """The visitor's choice of language, for a year (`i18n.COOKIE`)."""
    _cookie(response, LANGUAGE_COOKIE, code, 365 * 24 * 3600, samesite="lax")


def start_session(response: bottle.BaseResponse, session: str, lifetime_s: int) -> None:
    _cookie(response, SESSION_COOKIE, session, lifetime_s)
    _cookie(response, LOGIN_COOKIE, "", 0)


def end_session(response: bottle.BaseResponse) -> None:
    _cookie(response, SESSION_COOKIE, "", 0)


def login_token() -> str:
    """The sign-in form's token: the browser's login cookie, or a new one."""
    token = cookie_sent(_named(LOGIN_COOKIE))  # ours is 32 URL-safe characters: any other
    # (planted: `a,b`) bottle would send back quoted, and the form's copy never match it
    return token if token and _TOKEN_SHAPE.fullmatch(token) else secrets.token_urlsafe(24)


def remember_login_token(response: bottle.BaseResponse, token: str) -> None:
    _cookie(response, LOGIN_COOKIE, token, 3600)


def check_login_token(form: dict[str, str]) -> None:
    check_csrf(cookie_sent(_named(LOGIN_COOKIE)) or "", form)
