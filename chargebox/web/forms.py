"""What a page's form handler shares: the Site, the Form shown back, a refusal beside it.

A form that moves a typed amount (a sale, a credit request, an adjustment) goes
one way only, `Site.money_form`: CSRF, the typed amount, the form's
Idempotency-Key, one use case, then a 303 or the page again with the reason
beside the field; a refund and an approval, which type no amount, call their use
case after `Site.posted` (CSRF). No rule of the business lives here (the pages
call the same use cases as the JSON API), and nothing here reads a cookie or renders.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

import bottle

from chargebox import periods
from chargebox.errors import (
    ChargeboxError,
    NotFound,
    SellerSuspended,
    Unauthorized,
    ValidationError,
)
from chargebox.idempotency import Outcome
from chargebox.money import amount_from_text
from chargebox.services import Chargebox
from chargebox.web.errors import status_of
from chargebox.web.html import language, redirect
from chargebox.web.refusals import STATEMENT_FORMS, sentence
from chargebox.web.request import query, read_form, statement_client, statement_headers
from chargebox.web.sessions import SignInRequired, Visitor, check_csrf, signed_in, visitor


def plain(exc: ChargeboxError, names: dict | None = None) -> str:
    """What went wrong, as a sentence for a person, in the page's language (refusals.py);
    `names`: fields the form names otherwise than the API."""
    return sentence(exc, language(), names)


@dataclasses.dataclass
class Form:
    """What a person typed into one form and what was wrong with it, to show it back."""

    values: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def error(self, name: str) -> str | None:
        return self.errors.get(name)

    def failed(self, exc: ChargeboxError, field: str, names: dict | None = None) -> Form:
        """Record `exc` next to its own field, or next to `field` when it names none."""
        self.errors[exc.field if exc.field in self.values else field] = plain(exc, names)
        return self


# A money form's use case: (visitor, form, amount, Idempotency-Key) -> what it made.
MoneyAct = Callable[[Visitor, dict[str, str], int, str | None], Outcome]
# The form's page again: (visitor, status, the form with its error) -> the page.
PageAgain = Callable[[Visitor, int, Form], bottle.HTTPResponse]
# The periods the pages' statement forms send, one each (views/statement_form.tpl).
PERIOD_FIELDS = ("day", "month", "jday", "jmonth")
# The page a statement form is on, again: (status, the form with its error) -> the page.
StatementAgain = Callable[[int, Form], bottle.HTTPResponse]


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

    def statement(self, seller_id: int, again: StatementAgain) -> bottle.HTTPResponse:
        """A seller's statement to download, for the period in the query (as the API's;
        a period typed in Persian digits, `۱۴۰۵-۰۹`, is read as `1405-09`, spaces around it
        are dropped, and a Gregorian date typed into a Jalali field, `2026/12/01`, is that
        day: periods.as_typed). A CSV is for a spreadsheet (Excel) to open: marked UTF-8.
        A period refused shows the page `again`, with what was typed and the reason beside
        its field, when it came as one of the page's forms sends it (one of PERIOD_FIELDS)
        and was refused for itself; an address written otherwise (from and to, two periods,
        none, a format no form sends) gets the error page."""
        typed = query("format", *periods.NAMES)
        try:
            params = periods.as_typed({
                name: periods.latin_digits(text).strip() for name, text in typed.items()
            })  # fmt: skip
            fmt = params.pop("format", "csv")
            rendered = self.service.statement(
                seller_id, params, fmt, for_spreadsheets=True, client=statement_client()
            )
        except ValidationError as exc:
            given = [name for name in typed if name != "format"]
            if len(given) != 1 or given[0] not in PERIOD_FIELDS or exc.field != given[0]:
                raise
            shown = Form({given[0]: typed[given[0]]})
            return again(status_of(exc), shown.failed(exc, given[0], STATEMENT_FORMS))
        return bottle.HTTPResponse(rendered, 200, statement_headers(rendered))

    def money_form(
        self, role: str, act: MoneyAct, again: PageAgain, done: str, *, signed: bool = False
    ) -> bottle.HTTPResponse:
        """Post a form that moves money: its amount (`signed` for an adjustment) and its
        Idempotency-Key go to `act`. A refusal shows the page `again`, with what was typed
        and the reason beside its field (the amount's, unless it names another), in the
        error's status; success is a 303 to `done` (which ends in the notice's query
        parameter) followed by the new record's id, so the next page says what was done.
        A session whose key (or seller) the write refused goes to sign in, as its next
        page would: its key was revoked, or its seller suspended, since the page read it."""
        you, form = self.posted(role)
        try:
            amount = amount_from_text(form.get("amount", ""), signed=signed)
            key = form.get("idempotency_key") or None
            made = act(you, form, amount, key)
        except (Unauthorized, SellerSuspended):
            raise SignInRequired from None
        except ChargeboxError as exc:
            return again(you, status_of(exc), Form(form).failed(exc, "amount"))
        return redirect(f"{done}{made.record['id']}")


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
