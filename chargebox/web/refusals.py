"""A refusal (a ChargeboxError) as words for a person, in the page's language.

The JSON API answers an error's English `message`, byte for byte, whatever the client
accepts; a page says the error's template (errors.py) in its own language instead, from
the gettext domain `errors`, beside the pages' `messages` (chargebox/web/i18n.py):

    pybabel extract -F babel-errors.cfg --project chargebox --no-location --sort-output \
        -o chargebox/web/locale/errors.pot .
    pybabel update -i chargebox/web/locale/errors.pot -d chargebox/web/locale -D errors
    (translate the new entries of chargebox/web/locale/fa/LC_MESSAGES/errors.po)
    pybabel compile -d chargebox/web/locale -D errors

`extract_errors` (babel-errors.cfg) finds every ChargeboxError built with a literal
template and every `phrase()`; tests/test_refusals.py fails on a message built any other
way. In Persian a number is written in Persian digits (its format spec kept), our own
words (a field's name, "sale", "approved") are translated, and what a person typed is
isolated (FSI ... PDI), quoted «...» by the translation, and never digit-converted.
No request here: html.py gives the request's language.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

from chargebox.errors import ChargeboxError, Damaged, NoTurn, phrase
from chargebox.web import i18n

DOMAIN = "errors"

# Plain words for what a person did not cause and cannot fix by retyping.
PLAIN = {
    "insufficient_credit": phrase("Not enough credit: {message}."),
    "balance_limit_exceeded": phrase("That would take the balance over the limit: {message}."),
    "unavailable": phrase("The service is busy right now and nothing was changed. Try again."),
    "too_many_pending_requests": phrase("You cannot ask for more credit yet: {message}."),
    "idempotency_key_reused": phrase(
        "This form was already sent with other values. Check and send again."
    ),
}

# Params that hold our own words (translated), not what a person typed (isolated).
WORDS = frozenset({"field", "what", "status", "character"})
# The words such params hold, beyond those marked where they are made (queries, text).
FIELDS = (
    phrase("amount"), phrase("phone"), phrase("number"), phrase("name"), phrase("label"),
    phrase("reason"), phrase("token"), phrase("status"), phrase("seller_id"), phrase("limit"),
    phrase("after_id"), phrase("format"), phrase("from"), phrase("to"), phrase("day"),
    phrase("month"), phrase("jmonth"), phrase("jday"), phrase("full"), phrase("Idempotency-Key"),
    phrase("idempotency_key"),
)  # fmt: skip
STATUSES = (phrase("approved"), phrase("rejected"), phrase("pending"))
# A field a form names otherwise than the API does: Find a sale's idempotency_key is the
# clerk's "Order id" (the API's own English is never changed by this).
FIND_A_SALE = {"idempotency_key": phrase("order id")}
# The statement forms' Jalali fields, as their labels name them ("A Jalali day").
STATEMENT_FORMS = {"jday": phrase("Jalali day"), "jmonth": phrase("Jalali month")}


class _Number:
    """An int in a translated sentence: formatted by its spec, then in the language's digits."""

    def __init__(self, value: int, language: i18n.Language) -> None:
        self.value, self.language = value, language

    def __format__(self, spec: str) -> str:
        return self.language.digits(format(self.value, spec))


class _Typed:
    """Text a person typed (or any value not ours): isolated (FSI ... PDI), so that it
    cannot reorder the sentence around it, its digits left as they are."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return i18n.isolate(format(str(self.value), spec))

    def __repr__(self) -> str:  # an untranslated `{name!r}`: quoted as Persian quotes
        return f"«{self:}»"


def _shown(name: str, value: object, language: i18n.Language) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return _Number(value, language)
    if name in WORDS and isinstance(value, str):
        said = i18n.catalogue(language.code, DOMAIN).gettext(value)
        return said if said != value else _Typed(value)
    return "" if value is None else _Typed(value)


def message(exc: ChargeboxError, language: i18n.Language, names: dict | None = None) -> str:
    """The error's message in `language`: in English its `message` exactly, unless
    `names` gives its field the name the form shows (as FIND_A_SALE)."""
    field = (names or {}).get(exc.field, exc.field)
    params = {"field": field, **exc.params}
    if language.code == "en":
        return exc.message if field == exc.field else exc.template.format(**params)
    template = i18n.catalogue(language.code, DOMAIN).gettext(exc.template)
    return template.format(**{name: _shown(name, v, language) for name, v in params.items()})


def sentence(exc: ChargeboxError, language: i18n.Language, names: dict | None = None) -> str:
    """What went wrong, as a sentence for a person: a refusal beside a form's field,
    which `names` may name as that form does. A damaged database is said as it is: no
    retry helps it, as PLAIN's "busy" would have a person try."""
    plain = "{message}" if isinstance(exc, (Damaged, NoTurn)) else PLAIN.get(exc.code, "{message}")
    frame = i18n.catalogue(language.code, DOMAIN).gettext(plain)
    said = frame.format(message=message(exc, language, names).rstrip("."))
    return said[:1].upper() + said[1:]


# --- for Babel's extraction (babel-errors.cfg) ---------------------------------------------


def error_classes() -> frozenset[str]:
    """The names of ChargeboxError and every subclass of it."""
    found, waiting = set(), [ChargeboxError]
    while waiting:
        cls = waiting.pop()
        found.add(cls.__name__)
        waiting.extend(cls.__subclasses__())
    return frozenset(found)


def called(call: ast.Call) -> str | None:
    """The name a call calls: `f(...)` and `module.f(...)` both give `f`."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def extract_errors(fileobj, keywords, comment_tags, options) -> Iterator[tuple]:
    """Babel's extraction method for chargebox/**.py: the literal template of each
    ChargeboxError built (`NotFound("sale {sale_id} does not exist", ...)`) and each
    `phrase("...")`, with its line."""
    makers = error_classes() | {phrase.__name__}
    tree = ast.parse(fileobj.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and called(node) in makers and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, None, first.value, []
