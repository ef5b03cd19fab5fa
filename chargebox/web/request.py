"""Reading what a request carries: the caller, the JSON or form body, the query string.

Bodies are parsed here rather than with bottle's `request.json` (which returns
None for other content types and answers bad JSON with an HTML 400). JSON
NaN/Infinity, duplicate keys and unknown fields are refused, so a client's
mistake is named instead of guessed around. Nothing here renders or knows a session.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator

import bottle

from chargebox.access_log import ENVIRON_WHO
from chargebox.auth import Access, Principal
from chargebox.errors import Forbidden, MalformedJSON, PayloadTooLarge, ValidationError
from chargebox.queries import MAX_LIMIT, Page
from chargebox.statements import CLIENT
from chargebox.text import header_spelt, reads_as_a_key, shown_back

MAX_ID = 2**63 - 1
SALE_SEARCH = ("phone", "idempotency_key", "from", "to")  # GET /api/sales, the seller's page
PAGING = ("limit", "after_id", "before_id", "order")  # every list's (`page`)
FORM_TYPE = "application/x-www-form-urlencoded"


def header(name: str) -> str | None:
    """A request header as sent (latin-1, per WSGI). bottle's get_header() would try
    UTF-8 and raise on other bytes; a bad header must be a 401/422, never a 500."""
    return bottle.request.environ.get("HTTP_" + name.upper().replace("-", "_"))


def caller(access: Access, *roles: str, remembered: bool = False) -> Principal:
    """Authenticate the request and require one of `roles` (401, then 403); `remembered`:
    a seller key read before may stand unread, for the request's write to check
    (auth.identify)."""
    unnamed()  # a refused key names no one (a 403 by role does)
    principal = access.authenticate(header("Authorization"), remembered)
    bottle.request.environ[ENVIRON_WHO] = principal  # for the access log
    if principal.role not in roles:
        if principal.is_admin:
            raise Forbidden("this route is not for the admin")
        raise Forbidden("this route is not for a seller")
    return principal


def unnamed() -> None:
    """The access log names no caller for this request: its key was refused (a refusal
    in the request's write, too: a key revoked since it was read)."""
    bottle.request.environ.pop(ENVIRON_WHO, None)


def check_body_size(limit: int) -> None:
    if bottle.request.content_length > limit:
        raise PayloadTooLarge("the request body is over {limit:,} bytes", limit=limit)


def _reject_constant(name: str) -> None:
    raise MalformedJSON("{name} is not allowed in JSON", name=name)


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedJSON("the JSON object repeats a key")
    return result


def _bounded_int(text: str) -> int:
    # Python refuses int() of over 4,300 digits. Any integer of over 20 digits is far
    # out of every range we accept, so its first 21 characters keep it out of range
    # (sign included) and validation answers 422 instead of a parse error.
    return int(text[:21])


# One decoder for every body (as json.loads keeps one for its defaults): made per call,
# it cost as much as the parse of a sale's body.
_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_int=_bounded_int,
    object_pairs_hook=_object_without_duplicates,
)


def read_body(limit: int) -> bytes:
    """The raw body, refused (413) when it is over `limit`, declared or not."""
    check_body_size(limit)
    raw = bottle.request.body.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge("the request body is over {limit:,} bytes", limit=limit)
    return raw


def read_json(limit: int, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """The body as a JSON object holding exactly the `required` keys and maybe `optional` ones."""
    raw = read_body(limit)
    try:
        body = _DECODER.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedJSON("the body is not valid UTF-8 JSON") from exc
    if not isinstance(body, dict):
        raise MalformedJSON("the body must be a JSON object")
    for name in body:
        if name not in required and name not in optional:
            raise ValidationError("unknown field {name!r}", name, name=name)
    for name in required:
        if name not in body:
            raise ValidationError("{field} is required", name)
    return body


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


def query(*allowed: str) -> dict[str, str]:
    """Query parameters, each at most once, none outside `allowed`, each value UTF-8 once
    its %XX are decoded; a refusal names the parameter in `field`."""
    params: dict[str, str] = {}
    for name, raw_value in _pairs():
        if name not in allowed:
            shown = shown_back(name)
            raise ValidationError("unknown query parameter {name!r}", shown, name=shown)
        if name in params:
            raise ValidationError("query parameter {name!r} is repeated", name, name=name)
        try:
            params[name] = urllib.parse.unquote(raw_value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            raise ValidationError("{field} is not UTF-8 once percent-decoded", name) from None
    return params


def _pairs() -> Iterator[tuple[str, str]]:
    """The query string's pairs as parse_qsl splits them, one at a time: each name
    %-decoded (one that is not UTF-8 is no parameter of ours: named as best it can be),
    each value as sent."""
    for part in bottle.request.environ.get("QUERY_STRING", "").split("&"):
        if part:
            raw_name, _, raw_value = part.partition("=")
            yield urllib.parse.unquote(raw_name.replace("+", " "), errors="replace"), raw_value


def idempotency_key() -> str | None:
    """A keyed write's Idempotency-Key, from its header. Sent in the query instead
    (`idempotency_key`, the search's name for it; any case, any separators), or in a
    header of another name (`X-Idempotency-Key`, `Idempotence-Key`) without the same key
    in Idempotency-Key, it was ignored, the write run unkeyed and a retry run again
    (helper-111): refused (422), as framing refuses such a header spelt with `_`. A keyed
    write's other query parameters and headers are ignored, as version 1 of the API did."""
    for name, _ in _pairs():  # idempotency_key, Idempotency-Key, x_idempotence_key, ...
        if reads_as_a_key(name):
            raise ValidationError("an Idempotency-Key goes in a header, not the query",
                                  shown_back(name))  # fmt: skip
    key = header("Idempotency-Key")
    for variable, value in bottle.request.environ.items():  # HTTP_X_IDEMPOTENCY_KEY, ...
        name = variable.removeprefix("HTTP_")
        if name not in (variable, "IDEMPOTENCY_KEY") and reads_as_a_key(name) and value != key:
            raise ValidationError("an Idempotency-Key goes in the header Idempotency-Key",
                                  shown_back(header_spelt(name)))  # fmt: skip
    return key


def integer_param(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    if name not in params:
        return None
    text = params[name]
    digits = text.lstrip("0") or "0"  # leading zeros are no size: `after_id=000...01` is 1
    value = int(digits) if text.isascii() and text.isdigit() and len(digits) <= 19 else None
    if value is None or not low <= value <= high:
        raise ValidationError(
            "{field} must be an integer from {low} to {high}", name, low=low, high=high
        )
    return value


def flag(params: dict[str, str], name: str) -> bool:
    """A true/false query parameter; absent is false."""
    text = params.get(name, "false")
    if text not in ("true", "false"):
        raise ValidationError("{field} must be true or false", name)
    return text == "true"


def query_id(name: str) -> int | None:
    """A positive id from a page's query string (a notice or a cursor); anything else is
    ignored, since a page shown without its notice is better than an error page."""
    text = bottle.request.query.get(name, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def page(params: dict[str, str]) -> Page:
    """A list's page: `limit`, `after_id` and `before_id` (its ids between them), `order`
    (oldest first, or newest: then the next page's before_id is its last id)."""
    limit = integer_param(params, "limit", 1, MAX_LIMIT)
    after_id = integer_param(params, "after_id", 0, MAX_ID)
    order = params.get("order", "oldest")
    if order not in ("oldest", "newest"):
        raise ValidationError("order must be oldest or newest", "order")
    return Page(
        limit=Page.limit if limit is None else limit,
        after_id=0 if after_id is None else after_id,
        before_id=integer_param(params, "before_id", 1, MAX_ID),
        newest_first=order == "newest",
    )


def seller_scope(principal: Principal, params: dict[str, str]) -> int | None:
    """Which seller a list shows: admin any (or all), a seller only itself."""
    seller_id = integer_param(params, "seller_id", 1, MAX_ID)
    if principal.is_admin:
        return seller_id
    if seller_id is not None and seller_id != principal.seller_id:
        raise Forbidden("a seller may only list its own records")
    return principal.seller_id


_QVALUE = re.compile(r"(?:^|;)\s*q\s*=\s*([01])(?:\.([0-9]{0,3}))?\s*(?:;|$)")


def accept_qualities(accept: str | None) -> dict[str, int]:
    """Each media range of an Accept header with its quality in thousandths (RFC 9110's
    qvalue: `q=0`, `0.`, `0.000` are 0, not acceptable; no q, or a malformed one, is 1000)."""
    qualities = {}
    for part in (accept or "").lower().split(","):
        media, _, params = part.partition(";")
        found = _QVALUE.search(params)
        whole, fraction = found.groups() if found else ("1", "")
        thousandths = int(whole) * 1000 + int((fraction or "").ljust(3, "0"))
        qualities[media.strip()] = min(1000, thousandths)
    return qualities


def wants_csv(accept: str | None) -> bool:
    """Whether an Accept header asks for text/csv, and likes it no less than JSON."""
    qualities = accept_qualities(accept)
    csv = qualities.get("text/csv", 0)
    return csv > 0 and csv >= qualities.get("application/json", 0)


def statement_client():
    """What this request's connection holds unsent, for a statement made as its client
    reads it (statements.CLIENT); None outside chargebox's server (a test's WSGI call)."""
    return bottle.request.environ.get(CLIENT)


def statement_headers(rendered) -> dict[str, str]:
    """A statement's headers, for the API and the pages alike: its media type, and a CSV
    one comes as a file to save (its name says whose and when: the Tehran day it starts,
    Jalali for a Jalali day or month)."""
    headers = {"Content-Type": rendered.media_type}
    if rendered.media_type.startswith("text/csv"):
        statement = rendered.statement
        name = f"statement-seller-{statement.seller_id}-{statement.period.first_day}.csv"
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return headers
