"""How a page is answered: templates and their helpers, error pages, the page plugin.

Every page is no-store, may not be framed, and runs under a Content-Security-Policy
that allows only our own stylesheet, script and font; a failure is rendered as a page
in plain words, never a stack trace. Every page speaks the request's language
(`language()`, see `i18n`) and says which in Content-Language; a sentence with markup
or user text inside is built with `fill` and `wrap`, which escape what they are given.
No form, cookie or use case is handled here: sessions live in `sessions`, form
handling in `forms`, bodies in `request`.
"""

from __future__ import annotations

import functools
import html
import urllib.parse
from pathlib import Path

import bottle

from chargebox.config import Config
from chargebox.errors import ChargeboxError
from chargebox.services import Chargebox
from chargebox.web import i18n, refusals
from chargebox.web.errors import RefusedBeforeRouting, internal_error, request_id, status_of
from chargebox.web.i18n import isolate
from chargebox.web.request import accept_qualities, unnamed
from chargebox.web.sessions import (
    SignInRequired,
    Visitor,
    cookie_sent,
    end_session,
    session_sent,
    signed_in,
)

VIEWS = Path(__file__).parent / "views"
STATIC = Path(__file__).parent / "static"
HTML = "text/html; charset=utf-8"
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; font-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Markup(str):
    """HTML made by us (`wrap`), put into a sentence as it is."""


def escaped(value: object) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def wrap(tag: str, content: object, attributes: str = "") -> Markup:
    """`content` (escaped unless it is Markup) in an element; `attributes` come from a
    template, never from a visitor."""
    return Markup(f"<{tag}{attributes}>{escaped(content)}</{tag}>")


def fill(message: str, **values: object) -> Markup:
    """A translated sentence as HTML, its `{placeholders}` filled: the sentence and every
    plain value escaped, a Markup value (`wrap`) kept, so a translator's word order holds
    and no visitor's text is read as markup."""
    return Markup(
        html.escape(message, quote=False).format_map({k: escaped(v) for k, v in values.items()})
    )


# A request's or seller's status as shown, in the page's language.
STATUSES = {
    "pending": i18n.N_("pending"),
    "approved": i18n.N_("approved"),
    "rejected": i18n.N_("rejected"),
    "active": i18n.N_("active"),
    "suspended": i18n.N_("suspended"),
}

HELPERS = {"visitor": None, "notice": None}


def language() -> i18n.Language:
    """This request's language: the `lang` cookie's, else the best of Accept-Language.
    The cookie is read as the session's is: bottle's reading (http.cookies) raises on a
    cookie named `a@b` (another site's on this host), and every page would be a 500."""
    environ = bottle.request.environ
    if "chargebox.language" not in environ:
        accepted = accept_qualities(environ.get("HTTP_ACCEPT_LANGUAGE"))
        chosen = i18n.choose(cookie_sent(i18n.COOKIE), accepted)
        environ["chargebox.language"] = chosen
    return environ["chargebox.language"]


def gettext(message: str) -> str:
    """`message` in this request's language (for Python; a template has `_`)."""
    return language().gettext(message)


def words(speaking: i18n.Language) -> dict[str, object]:
    """What every template may use to say things in the page's language."""
    return {
        "_": speaking.gettext,
        "ngettext": speaking.ngettext,
        "num": speaking.number,
        "ident": speaking.plain_number,
        "digits": speaking.digits,
        "toman": speaking.toman,
        "signed": speaking.signed,
        "when": speaking.when,
        "at": lambda stamp: wrap("span", speaking.when(stamp), ' class="when"'),
        "status": lambda code: speaking.gettext(STATUSES.get(code, code)),
        "fill": fill,
        "wrap": wrap,
        "lang": speaking.code,
        "dir": speaking.direction,
        "language": speaking,
    }


def here() -> str:
    """This page's own address, to come back to after switching language; a form's post
    cannot be opened again, so after one it is the start page."""
    if bottle.request.method != "GET":
        return "/"
    path = urllib.parse.quote(bottle.request.path)
    query = bottle.request.query_string
    return f"{path}?{query}" if query else path


def switch() -> list[tuple[str, str, str]]:
    """The language switch: each language's code, its name in itself, and its link."""
    back = urllib.parse.quote(here(), safe="")
    return [(code, i18n.NAMES[code], f"/language/{code}?back={back}") for code in i18n.LANGUAGES]


@functools.cache
def _template(name: str) -> bottle.SimpleTemplate:
    return bottle.SimpleTemplate(name=name, lookup=[str(VIEWS)])


def render(name: str, status: int = 200, **context: object) -> bottle.HTTPResponse:
    speaking = language()
    body = _template(name).render(**{**HELPERS, **words(speaking), "switch": switch(), **context})
    response = bottle.HTTPResponse(body.encode("utf-8"), status)
    response.content_type = HTML
    response.set_header("Content-Language", speaking.code)
    return response


def redirect(location: str) -> bottle.HTTPResponse:
    """303 See Other: after a form is handled, a reload of the next page resends nothing."""
    return bottle.HTTPResponse(status=303, headers={"Location": location})


def error_page(status: int, message: str, visitor: Visitor | None = None) -> bottle.HTTPResponse:
    speaking = language()
    title = speaking.gettext("Error {status}").format(status=speaking.plain_number(status))
    page = render("error", status, title=title, message=message, visitor=visitor)
    if status == 503:  # as the API's: nothing changed, retry
        page.set_header("Retry-After", "1")
    return page


def failure_page(service: Chargebox, status: int, message: str) -> bottle.HTTPResponse:
    """An error page; a signed-in visitor keeps its menu and its way to sign out."""
    try:
        you = signed_in(service)
    except ChargeboxError:
        you = None
    return error_page(status, message, you)


# The JSON API's paths (web/api.py): their errors stay JSON whatever the client accepts.
API_ROOTS = ("/api", "/health", "/openapi.json")
# bottle's own refusals of a page address, in plain words (translated where shown).
NOT_A_PAGE = {
    404: i18n.N_("There is no page at this address. Check it for a typing mistake."),
    405: i18n.N_("This page cannot be opened that way."),
}
NOT_HANDLED = i18n.N_("The request could not be handled.")


def wants_html(path: str, accept: str) -> bool:
    """A page address asked for by a browser: outside the API, and text/html preferred
    to JSON in Accept (a browser's; curl's */* and an API client's are not)."""
    if any(path == root or path.startswith(root + "/") for root in API_ROOTS):
        return False
    qualities = accept_qualities(accept)
    return qualities.get("text/html", 0) > qualities.get("application/json", 0)


def not_a_page(service: Chargebox, error: bottle.HTTPError) -> bottle.HTTPResponse | None:
    """bottle's own 4xx (a mistyped page address, a wrong method) as the styled error page,
    with the pages' headers, when a browser asked for a page, and our refusal before
    routing (app.py) where a page's route would have answered, as that page would have;
    None: answer it as JSON."""
    path, accept = bottle.request.path, bottle.request.environ.get("HTTP_ACCEPT", "")
    refused = isinstance(error, RefusedBeforeRouting)
    page = wants_html(path, accept) or (refused and error.page_route)
    if not 400 <= error.status_code < 500 or not page:
        return None
    if refused:
        message = refusals.sentence(error.refusal, language())
    else:
        message = gettext(NOT_A_PAGE.get(error.status_code, NOT_HANDLED))
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
        message = gettext("Something went wrong (request {request}).")
        return error_page(500, message.format(request=isolate(request_id())))

    def decorator(callback):
        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            request_id()
            try:
                response = callback(*args, **kwargs)
            except SignInRequired:
                unnamed()  # the access log names no one sent to sign in
                ended = session_sent()
                response = redirect("/login?ended=1" if ended else "/login")
                if ended:  # said once: the cookie of a session that ended is of no use
                    end_session(response)
            except ChargeboxError as exc:
                # A 500 here means a guard of the database fired: a bug, like any other.
                status = status_of(exc)
                said = refusals.sentence(exc, language())
                response = bug(exc) if status == 500 else failed(status, said)
            except bottle.HTTPError as exc:
                response = failed(exc.status_code, gettext(NOT_HANDLED))
            except Exception as exc:
                response = bug(exc)
            response.set_header("X-Request-Id", request_id())
            for name, value in HEADERS.items():
                if name not in response.headers:  # static files may be cached
                    response.set_header(name, value)
            return response

        return wrapper

    return decorator
