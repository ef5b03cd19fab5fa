"""The bottle application: `create_app(config)` wires routes, the JSON plugin and error pages.

Every request's declared body is checked against the limit before it is routed
(a 413 for any method and path). Every JSON route callback is wrapped once,
here: it gets a request id and a single exit for results and errors.
bottle's own error pages are replaced, so even an unknown route answers our JSON
shape, except that a browser's mistyped page address gets the styled 404 page
(`html.not_a_page`). The HTML pages are a second Bottle merged in, wrapped by their own plugin.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from importlib import resources

import bottle

from chargebox.config import Config
from chargebox.errors import ChargeboxError, PayloadTooLarge, SellerSuspended, Unauthorized
from chargebox.services import Chargebox
from chargebox.web import api, pages
from chargebox.web.errors import (
    SECURITY_HEADERS,
    RefusedBeforeRouting,
    from_bottle,
    from_exception,
    internal_error,
    json_body,
    request_id,
)
from chargebox.web.html import not_a_page, page_plugin
from chargebox.web.request import check_body_size, unnamed

JSON = "application/json; charset=utf-8"


class JsonBottle(bottle.Bottle):
    """A Bottle whose own errors (404, 405, 413, 500) are JSON, not HTML; only where
    `page_error` answers (a browser on a page address) is the styled page sent instead."""

    page_error: Callable[[bottle.HTTPError], bottle.HTTPResponse | None] | None = None

    def default_error_handler(self, res: bottle.HTTPError) -> bytes:
        if res.status_code == 405 and res.get_header("Allow"):
            res.set_header("Allow", with_head(res.get_header("Allow")))
        rendered = (self.page_error and self.page_error(res)) or from_bottle(res)
        bottle.response.status = rendered.status_code
        for name, value in rendered.headerlist:
            bottle.response.set_header(name, value)
        _stamp(bottle.response)
        return rendered.body


def with_head(allow: str) -> str:
    """bottle's `Allow`, with HEAD wherever GET is: bottle answers HEAD by the GET route."""
    methods = {method.strip() for method in allow.split(",")} - {""}
    return ",".join(sorted(methods | {"HEAD"} if "GET" in methods else methods))


def _stamp(response: bottle.BaseResponse) -> None:
    response.set_header("X-Request-Id", request_id())
    for name, value in SECURITY_HEADERS.items():
        response.set_header(name, value)


def json_plugin(config: Config):
    """Wrap a route: (status, body[, headers]) or an exception -> one JSON response."""

    def decorator(callback):
        @functools.wraps(callback)
        def wrapper(*args, **kwargs):
            request_id()
            try:
                status, body, *rest = callback(*args, **kwargs)
                response = bottle.HTTPResponse(  # bytes, dicts, or a stream (a statement)
                    json_body(body) if isinstance(body, (dict, list)) else body,
                    status,
                    rest[0] if rest else None,
                )
                if not (rest and "Content-Type" in rest[0]):  # /metrics speaks text
                    response.content_type = JSON
            except ChargeboxError as exc:
                if isinstance(exc, (Unauthorized, SellerSuspended)):
                    unnamed()  # a key refused, in a write too (revoked, suspended since)
                response = from_exception(exc)
            except bottle.HTTPError as exc:
                response = from_bottle(exc)
            except Exception as exc:  # a bug: logged without trace, answered as 500
                response = internal_error(exc)
            _stamp(response)
            return response

        return wrapper

    return decorator


def _refuse_a_large_body(limit: int, pages: bottle.Bottle) -> None:
    """Before authentication and any read, whatever the method and the path: a declared
    body over `limit` (a chunked one's too: waitress declares it) is 413, answered as
    JSON, or as a page where a page's route would have answered (or a browser asked for
    a page). The route it would have reached is noted for the metrics' label."""
    try:
        check_body_size(limit)
    except PayloadTooLarge as exc:
        environ = bottle.request.environ
        with contextlib.suppress(bottle.HTTPError):  # no route: a 404 or 405 would be
            environ["bottle.route"] = bottle.request.app.router.match(environ)[0]
        route = environ.get("bottle.route")
        raise RefusedBeforeRouting(exc, route is not None and route.app is pages) from None


def load_openapi() -> bytes:
    return resources.files("chargebox").joinpath("openapi.json").read_bytes()


def create_app(config: Config, service: Chargebox | None = None) -> bottle.Bottle:
    service = service or Chargebox(config)
    app = JsonBottle()
    app.config["catchall"] = True
    app.page_error = functools.partial(not_a_page, service)
    app.install(json_plugin(config))
    api.install(app, config, service, load_openapi())
    # Merged routes keep their own Bottle, so its plugin (not the JSON one) wraps them.
    web_pages = bottle.Bottle()
    web_pages.install(page_plugin(config, service))
    pages.install(web_pages, config, service)
    app.merge(web_pages)
    limit = functools.partial(_refuse_a_large_body, config.max_body_bytes, web_pages)
    app.add_hook("before_request", limit)
    return app
