"""The one table from error to HTTP status, and the one renderer of error bodies.

Every error a client sees, ours or bottle's own (404, 405, 413, 500), leaves
through `error_response` as `{"error": {"code", "message"[, "field"]}}`. An
unexpected exception is logged as its type and place with a request id, never
with a stack trace, and answered as `internal_error`.
"""

from __future__ import annotations

import json
import logging

import bottle

from chargebox import errors
from chargebox.access_log import request_id_of, without_secrets

log = logging.getLogger("chargebox.web")

# On every JSON answer, the HTTP layer's refusals (framing.py) included.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
STATUS = {
    errors.MalformedJSON: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.SellerSuspended: 403,
    errors.NotFound: 404,
    errors.InsufficientCredit: 409,
    errors.BalanceLimitExceeded: 409,
    errors.PhoneTotalExceeded: 409,
    errors.NotPending: 409,
    errors.AlreadyRefunded: 409,
    errors.KeyLabelInUse: 409,
    errors.KeyRevoked: 409,
    errors.TooManyPendingRequests: 409,
    errors.PayloadTooLarge: 413,
    errors.ValidationError: 422,
    errors.IdempotencyKeyReused: 422,
    errors.TooManySignIns: 429,
    errors.IntegrityViolation: 500,
    errors.Unavailable: 503,
    errors.NotGranted: 503,
}

# bottle raises HTTPError itself for unknown routes, wrong methods and big bodies.
BOTTLE_CODES = {
    400: ("malformed_json", "the request could not be parsed"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "this route does not accept that method"),
    413: ("payload_too_large", "the request body is too large"),
}


def request_id() -> str:
    """This request's id (access_log.request_id_of): in the X-Request-Id header, in 500
    bodies, in the access log line and in the log line of a failure."""
    return request_id_of(bottle.request.environ)


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one a call


def json_body(body: dict | list) -> bytes:
    return _COMPACT.encode(body).encode("utf-8")


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict | None = None
) -> bottle.HTTPResponse:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    response = bottle.HTTPResponse(json_body({"error": error}), status, headers)
    response.content_type = "application/json; charset=utf-8"
    if status == 401:
        response.set_header("WWW-Authenticate", 'Bearer realm="chargebox"')
    if status == 503:
        response.set_header("Retry-After", "1")
    return response


def status_of(exc: errors.ChargeboxError) -> int:
    """The status of the nearest class in `exc`'s MRO that the table names (a subclass of a
    mapped error keeps its parent's status instead of becoming a 500)."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def from_exception(exc: errors.ChargeboxError) -> bottle.HTTPResponse:
    status = status_of(exc)
    if status == 500:
        return internal_error(exc)
    response = error_response(status, exc.code, exc.message, exc.field)
    if exc.replayed:
        response.set_header("Idempotent-Replayed", "true")
    return response


def internal_error(exc: BaseException) -> bottle.HTTPResponse:
    """Log where it happened (not the trace, not the data) and answer a bare 500."""
    ident = request_id()
    log.error(
        "request %s %s %s failed: %s",
        ident,
        bottle.request.method,
        without_secrets(bottle.request.path),
        errors.in_one_line(exc),
    )
    return error_response(500, "internal_error", f"unexpected server error (request id {ident})")


class RefusedBeforeRouting(bottle.HTTPError):
    """Our refusal, raised before routing (app.py's body limit): answered as that refusal,
    as JSON, or as a page where the route it would have reached is a page's or a browser
    asked for one (html.not_a_page)."""

    def __init__(self, refusal: errors.ChargeboxError, page_route: bool) -> None:
        super().__init__(status_of(refusal), refusal.message)
        self.refusal, self.page_route = refusal, page_route


def from_bottle(error: bottle.HTTPError) -> bottle.HTTPResponse:
    """Re-render one of bottle's own HTML errors as our JSON shape (our refusal raised
    before routing as that refusal)."""
    if isinstance(error, RefusedBeforeRouting):
        return from_exception(error.refusal)
    status = error.status_code
    if status >= 500:
        if error.exception is not None:
            return internal_error(error.exception)
        return error_response(status, "internal_error", "unexpected server error")
    code, message = BOTTLE_CODES.get(status, ("http_error", "the request was refused"))
    response = error_response(status, code, message)
    if status == 405 and error.get_header("Allow"):
        response.set_header("Allow", error.get_header("Allow"))
    return response
