"""docs/api.md, the contract in words, agrees with chargebox/openapi.json, the one served.

Every operation of the OpenAPI document is a row of the doc's route table and the
other way round; every code of the Error schema is a row of the doc's error table,
with the status the code gives it: `web/errors.py` (STATUS, walked up each error's
MRO, and BOTTLE_CODES) for the application, `framing.py` (WAITRESS_ERRORS) for
the HTTP layer. The README's summary tables agree with both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chargebox import errors
from chargebox.config import (
    DEFAULT_BUSY_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_AMOUNT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PENDING_REQUESTS,
    DEFAULT_REQUEST_TIMEOUT,
    MAX_BALANCE,
)
from chargebox.framing import WAITRESS_ERRORS
from chargebox.web.errors import BOTTLE_CODES, STATUS

ROOT = Path(__file__).resolve().parent.parent
API_DOC = (ROOT / "docs" / "api.md").read_text("utf-8")
README = (ROOT / "README.md").read_text("utf-8")
OPENAPI = json.loads((ROOT / "chargebox" / "openapi.json").read_text("utf-8"))
METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")
_METHOD = f"(?:{'|'.join(METHODS)})"
# A row of a route table: `| GET | `/path` |` or `| GET, POST | `/a`, `/b` |`.
ROUTE_ROW = re.compile(rf"^\| ({_METHOD}(?:, {_METHOD})*) \| ([^|]+) \|")
ERROR_ROW = re.compile(r"^\| (\d{3}) \| `(\w+)` \|", re.MULTILINE)


def operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in OPENAPI["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def routes_in(text: str) -> set[tuple[str, str]]:
    routes = set()
    for line in text.splitlines():
        if match := ROUTE_ROW.match(line):
            for path in re.findall(r"`(/[^`]*)`", match[2]):
                routes.update((method, path) for method in match[1].split(", "))
    return routes


def error_rows(text: str) -> set[tuple[int, str]]:
    return {(int(status), code) for status, code in ERROR_ROW.findall(text)}


def documented_codes() -> set[str]:
    error = OPENAPI["components"]["schemas"]["Error"]["properties"]["error"]
    return set(error["properties"]["code"]["enum"])


def statuses_the_code_gives() -> dict[str, set[int]]:
    """Each error code the server can answer, and the statuses it answers it with."""

    def subclasses(cls: type) -> list[type]:
        return [cls] + [sub for child in cls.__subclasses__() for sub in subclasses(child)]

    given: dict[str, set[int]] = {}
    for cls in subclasses(errors.ChargeboxError):
        status = next((STATUS[kind] for kind in cls.__mro__ if kind in STATUS), 500)
        given.setdefault(cls.code, set()).add(status)
    for table in (BOTTLE_CODES, WAITRESS_ERRORS):
        for status, (code, _message) in table.items():
            given.setdefault(code, set()).add(status)
    return given


def test_every_operation_of_the_openapi_document_is_in_the_route_table_and_no_other():
    documented = routes_in(API_DOC)
    assert documented - operations() == set(), "in docs/api.md, not in openapi.json"
    assert operations() - documented == set(), "in openapi.json, not in docs/api.md"


def test_each_error_code_has_one_status_and_the_openapi_document_lists_exactly_those_codes():
    given = statuses_the_code_gives()
    assert {code: statuses for code, statuses in given.items() if len(statuses) > 1} == {}
    assert set(given) == documented_codes()


def test_the_error_table_gives_every_code_with_the_status_the_code_gives_it():
    given = {code: statuses.pop() for code, statuses in statuses_the_code_gives().items()}
    rows = error_rows(API_DOC)
    assert len({code for _, code in rows}) == len(rows), f"a code is listed twice: {rows}"
    assert rows == {(status, code) for code, status in given.items()}


def test_the_readme_summarises_the_same_routes_and_error_codes():
    assert routes_in(README) == operations()
    assert error_rows(README) == error_rows(API_DOC)


def test_the_limits_table_gives_the_configured_defaults():
    limits = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", API_DOC, re.MULTILINE))
    expected = {
        "request body": f"{DEFAULT_MAX_BODY_BYTES // 1024} KiB",
        "a request, first byte to last": f"{DEFAULT_REQUEST_TIMEOUT} s",
        "a keep-alive connection between requests": f"{DEFAULT_IDLE_TIMEOUT} s",
        "connections per server process": f"{DEFAULT_MAX_CONNECTIONS:,}",
        "a write": f"the busy timeout ({DEFAULT_BUSY_TIMEOUT_MS // 1000} s",
        "amount": f"1 to {DEFAULT_MAX_AMOUNT:,} toman",
        "balance": f"0 to 10^{len(str(MAX_BALANCE)) - 1} toman",
        "pending credit requests per seller": f"{DEFAULT_MAX_PENDING_REQUESTS} (",
    }
    for what, value in expected.items():
        assert value in limits[what], (what, limits[what])
