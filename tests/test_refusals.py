"""Refusals in the page's language: what a ChargeboxError says on a page, in Persian and English.

In process: a ChargeboxError keeps its template and params and formats its English message
as before; the `errors` extraction finds every message (and no error is built from an
f-string or a sum it could not see); a Persian sentence has Persian digits, translated
words, and the visitor's own text isolated. Over real servers (both backends): each refused
form says why in Persian with Accept-Language: fa, in the same English as ever without it,
and the JSON API answers English whatever the client accepts.
"""

from __future__ import annotations

import ast
import copy
import io
import pickle
import re
from pathlib import Path

import pytest

from chargebox.errors import (
    NOT_COVERED,
    SUSPENDED,
    AlreadyRefunded,
    ChargeboxError,
    InsufficientCredit,
    KeyLabelInUse,
    NotPending,
    ValidationError,
)
from chargebox.web import i18n, refusals
from tests.support import ADMIN_TOKEN
from tests.web_support import ADMIN, SELLER, Browser, refused, text_of

PACKAGE = Path(refusals.__file__).resolve().parent.parent
FA, EN = i18n.LANGUAGE["fa"], i18n.LANGUAGE["en"]
PHONE = "09121234567"
LABEL_IN_USE = "another of this seller's keys is labelled {label!r}"
ISOLATED = re.compile("\u2068[^\u2069]*\u2069")


def persian(text: str | None) -> str:
    """`text`, checked to be Persian: its own words with no Latin letter or digit, once the
    visitor's isolated text (FSI ... PDI) is left out; returned for further checks."""
    assert text, "no message shown"
    ours = ISOLATED.sub("", text)
    assert re.search("[\u0600-\u06ff]", ours), text
    assert not re.search("[A-Za-z0-9]", ours), f"Latin in a Persian sentence: {text!r}"
    return text


# --- the message, its template and params -----------------------------------------------------


def test_an_error_formats_its_english_message_from_its_template_and_params():
    refusal = InsufficientCredit(NOT_COVERED, balance=80_000, amount=100_000)
    assert refusal.message == "balance 80,000 toman does not cover 100,000 toman"
    assert (refusal.template, refusal.params) == (
        NOT_COVERED,
        {"balance": 80_000, "amount": 100_000},
    )
    named = ValidationError("{field} must be a string", "phone")
    assert (named.message, named.field, named.params) == ("phone must be a string", "phone", {})


def test_a_replayed_refusal_reads_its_params_back_from_the_stored_message():
    again = InsufficientCredit.replay(NOT_COVERED, "balance 80,000 toman does not cover 5 toman")
    assert again.replayed and again.params == {"balance": 80_000, "amount": 5}
    assert again.message == "balance 80,000 toman does not cover 5 toman"
    odd = InsufficientCredit.replay(NOT_COVERED, "an older {wording}")
    assert (odd.message, odd.params, odd.replayed) == ("an older {wording}", {}, True)


def test_an_error_pickles_and_copies_even_when_what_was_typed_holds_braces():
    refusal = KeyLabelInUse(LABEL_IN_USE, "label", label="{till}")
    for again in (pickle.loads(pickle.dumps(refusal)), copy.copy(refusal)):
        assert type(again) is KeyLabelInUse and again.message == refusal.message
        assert (again.template, again.params, again.field) == (
            LABEL_IN_USE,
            {"label": "{till}"},
            "label",
        )


# --- the extraction ---------------------------------------------------------------------------


def extracted(source: str) -> list[str]:
    found = refusals.extract_errors(io.BytesIO(source.encode()), {}, [], {})
    return [message for _line, _function, message, _comments in found]


def test_the_extraction_finds_literal_templates_and_phrases_and_nothing_else():
    source = (
        'raise NotFound("sale {sale_id} does not exist", sale_id=sale_id)\n'
        'error = errors.ValidationError("{field} must be a string", "phone")\n'
        'WORD = phrase("ledger entry")\n'
        'raise ValueError("--db: not ours, the CLI\'s")\n'
        'print(Forbidden.code, "not a message")\n'
    )
    assert extracted(source) == [
        "sale {sale_id} does not exist",
        "{field} must be a string",
        "ledger entry",
    ]


def test_the_extraction_finds_the_messages_raised_across_the_package():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        found.update(extracted(path.read_text("utf-8")))
    known = {
        NOT_COVERED,
        SUSPENDED,
        "{field} must be between 1 and {max_amount:,} toman",  # money.py
        "{field} must be an Iranian mobile number such as 09121234567",  # phones.py
        "{field} must be 1 to {max_length} characters",  # text.py
        "another of this seller's keys is labelled {label!r}",  # services.py
        "sale {sale_id} was refunded already (ledger entry {entry_id})",  # ledger.py
        "unknown query parameter {name!r}",  # web/request.py
        "This form has expired or did not come from this site. "
        "Nothing was changed: go back to the form, reload it and send it again.",  # web/sessions.py
        "Not enough credit: {message}.",  # web/refusals.py
        "the Arabic letter mark",  # a word of text.py
    }
    assert known <= found, known - found


def unseen(source: str) -> list[str]:
    """Each ChargeboxError built with a message the extraction cannot read: an f-string,
    a sum, a condition, a call (`.format()`): anything but a literal or a named constant."""
    classes, found = refusals.error_classes(), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and refusals.called(node) in classes and node.args:
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if not literal and not isinstance(first, ast.Name | ast.Attribute | ast.Subscript):
                found.append(f"line {node.lineno}: {ast.unparse(first)}")
    return found


def test_the_check_catches_a_message_the_catalogue_could_not_see():
    source = (
        'raise NotFound(f"sale {sale_id} does not exist")\n'
        'raise errors.Forbidden("not for " + who)\n'
        'raise ValidationError("a" if x else "b", "f")\n'
        'raise NotFound("sale {sale_id}".format(sale_id=1))\n'
        'raise NotFound("sale {sale_id} does not exist", sale_id=1)\n'
        "raise SellerSuspended(SUSPENDED)\n"
        "raise ValidationError(_UNGROUPED[signed], field)\n"
    )
    assert [line.split(":")[0] for line in unseen(source)] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
    ]


def test_no_chargebox_error_is_built_from_a_message_the_catalogue_cannot_see():
    found = [
        f"{path.relative_to(PACKAGE.parent)} {where}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for where in unseen(path.read_text("utf-8"))
    ]
    assert not found, "write the message as a template with params (errors.py):\n" + "\n".join(
        found
    )


def test_every_error_class_is_known_to_the_extraction():
    def subclasses(cls):
        return {cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))}

    assert refusals.error_classes() == {cls.__name__ for cls in subclasses(ChargeboxError)}
    assert "LockTimeout" in refusals.error_classes()  # a grandchild


# --- sentences ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusal", "english", "farsi"),
    [
        (
            InsufficientCredit(NOT_COVERED, balance=80_000, amount=100_000),
            "Not enough credit: balance 80,000 toman does not cover 100,000 toman.",
            "کمبود اعتبار: موجودی ۸۰٬۰۰۰ تومان برای ۱۰۰٬۰۰۰ تومان کافی نیست.",
        ),
        (
            ValidationError(
                "{field} must be between 1 and {max_amount:,} toman", "amount", max_amount=10**9
            ),  # fmt: skip
            "Amount must be between 1 and 1,000,000,000 toman",
            "مبلغ باید بین ۱ و ۱٬۰۰۰٬۰۰۰٬۰۰۰ تومان باشد",
        ),
        (
            NotPending(
                "credit request {request_id} is already {status}", request_id=7, status="approved"
            ),  # fmt: skip
            "Credit request 7 is already approved",
            "درخواست اعتبار شمارهٔ ۷ پیش‌تر بررسی شده است: تأییدشده",
        ),
        (
            AlreadyRefunded(
                "sale {sale_id} was refunded already (ledger entry {entry_id})",
                sale_id=12,
                entry_id=40,
            ),  # fmt: skip
            "Sale 12 was refunded already (ledger entry 40)",
            "فروش شمارهٔ ۱۲ پیش‌تر برگشت داده شده است (ردیف دفتر شمارهٔ ۴۰)",
        ),
    ],
    ids=["credit", "range", "decided", "refunded"],
)
def test_a_refusal_reads_as_a_sentence_in_each_language(refusal, english, farsi):
    assert refusals.sentence(refusal, EN) == english
    assert refusals.sentence(refusal, FA) == persian(farsi)


def test_the_visitors_own_text_is_isolated_quoted_and_keeps_its_digits():
    refusal = KeyLabelInUse(LABEL_IN_USE, "label", label="till 2 ۳")
    assert refusals.sentence(refusal, EN) == "Another of this seller's keys is labelled 'till 2 ۳'"
    said = persian(refusals.sentence(refusal, FA))
    assert "«\u2068till 2 ۳\u2069»" in said


def test_a_field_is_named_as_its_form_names_it_and_the_api_english_stays():
    refusal = ValidationError("{field} must be 1 to 255 printable ASCII characters",
                              "idempotency_key")  # fmt: skip
    assert refusal.message == "idempotency_key must be 1 to 255 printable ASCII characters"
    assert refusals.message(refusal, EN) == refusal.message  # what the API answers
    found = refusals.FIND_A_SALE  # Find a sale's "Order id (your Idempotency-Key)"
    english = refusals.sentence(refusal, EN, found)
    assert english == "Order id must be 1 to 255 printable ASCII characters"
    said = persian(refusals.sentence(refusal, FA, found))
    assert said.startswith("شمارهٔ سفارش باید ۱ تا ۲۵۵ نویسه باشد") and "ASCII" not in said
    assert "یکتا" not in persian(refusals.sentence(refusal, FA))  # one term on every page


def test_a_word_the_catalogue_lacks_is_shown_isolated_as_it_is():
    said = refusals.message(ValidationError("{field} is required", "mystery"), FA)
    assert said == "\u2068mystery\u2069 لازم است"


# --- over a real server, in Persian and in English ---------------------------------------------


def persian_browser(world, role: str | None) -> Browser:
    browser = world.browser()
    browser.http.headers["Accept-Language"] = "fa-IR,fa;q=0.9,en;q=0.5"
    if role:
        assert browser.sign_in(world.key if role == SELLER else ADMIN_TOKEN).status_code == 303
    return browser


def post(path: str, **fields: str):
    return lambda browser, world: browser.post_form(path.format(**world.ids), fields)


def sell(amount: str, phone: str = PHONE):
    return post("/seller/sales", phone=phone, amount=amount)


def nothing(world) -> None:
    pass


def fill_the_queue(world) -> None:
    for _ in range(9):  # the world's seller has one pending already; the cap is 10
        assert world.api.post("/api/credit-requests", {"amount": 1000}).status_code == 201


def approve(world) -> None:
    admin = world.server.admin()
    assert admin.post(f"/api/credit-requests/{world.ids['request']}/approve").status_code == 200
    admin.close()


def statement(query: str):
    return lambda browser, world: browser.get(f"/seller/statement?{query}")


def find(query: str):
    return lambda browser, world: browser.get(f"/seller/sales/found?{query}")


def no_csrf(browser, world):
    return browser.post_form("/seller/sales", {"phone": PHONE, "amount": "1000"}, csrf=False)


# (what, who, first, how, status, the element that says it, its English, its Persian holds)
REFUSED = [
    ("overspend", SELLER, nothing, sell("200,000"), 409, "sale-amount-error",
     "Not enough credit: balance 100,000 toman does not cover 200,000 toman.",
     ["کمبود اعتبار", "۱۰۰٬۰۰۰", "۲۰۰٬۰۰۰"]),
    ("zero", SELLER, nothing, sell("0"), 422, "sale-amount-error",
     "Amount must be between 1 and 1,000,000,000 toman", ["مبلغ", "۱٬۰۰۰٬۰۰۰٬۰۰۰"]),
    ("too large", SELLER, nothing, sell("9" * 40), 422, "sale-amount-error",
     "Amount must be between 1 and 1,000,000,000 toman", ["مبلغ", "۱٬۰۰۰٬۰۰۰٬۰۰۰"]),
    ("malformed", SELLER, nothing, sell("1,5"), 422, "sale-amount-error",
     "Amount must be a whole number of toman, such as 50,000 or 50000; thousands separators"
     " only between groups of three", ["۵۰٬۰۰۰", "سه‌رقمی"]),
    ("phone", SELLER, nothing, sell("1000", "0912"), 422, "sale-phone-error",
     "Phone must be an Iranian mobile number such as 09121234567", ["۰۹۱۲۱۲۳۴۵۶۷"]),
    ("empty name", ADMIN, nothing, post("/admin/sellers", name="   "), 422, "seller-name-error",
     "Name must be 1 to 200 characters", ["نام", "۲۰۰"]),
    ("pending cap", SELLER, fill_the_queue, post("/seller/credit-requests", amount="1000"), 409,
     "credit-amount-error",
     "You cannot ask for more credit yet: at most 10 of your credit requests may wait for the"
     " admin at once; ask again when one is approved or rejected.", ["۱۰", "مدیر"]),
    ("label in use", ADMIN, nothing, post("/admin/sellers/{seller}/keys", label="default"), 409,
     "key-label-error", "Another of this seller's keys is labelled 'default'",
     ["«\u2068default\u2069»"]),
    ("decided", ADMIN, approve, post("/admin/credit-requests/{request}/approve"), 409, "problem",
     "Credit request {request} is already approved", ["پیش‌تر بررسی شده است: تأییدشده"]),
    ("statement", SELLER, nothing, statement("month=2026-13"), 422, "statement-month-error",
     "Month must be a month written YYYY-MM", ["ماه", "سال"]),
    ("jalali month", SELLER, nothing, statement("jmonth=1405/13"), 422, "statement-jmonth-error",
     "Jalali month must be a month written YYYY/MM or YYYY-MM, its month 1 to 12",
     ["۱۴۰۵/۰۹", "۱ تا ۱۲"]),
    ("order id", SELLER, nothing, find("idempotency_key=%D8%B3%D9%81%D8%A7%D8%B1%D8%B4"), 422,
     "find-idempotency_key-error", "Order id must be 1 to 255 printable ASCII characters",
     ["شمارهٔ سفارش باید ۱ تا ۲۵۵ نویسه باشد"]),
    ("csrf", SELLER, nothing, no_csrf, 403, "error-message",
     "This form has expired or did not come from this site. Nothing was changed: go back to"
     " the form, reload it and send it again", ["این فرم", "برگردید"]),
    ("unknown seller", ADMIN, nothing, post("/admin/sellers/999999/adjustments", amount="5000",
     reason="ghost"), 404, "error-message", "Seller 999999 does not exist",
     ["فروشنده", "شمارهٔ ۹۹۹۹۹۹ وجود ندارد"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "first", "send", "status", "element", "english", "held"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_refused_form_says_why_in_persian_and_in_the_same_english_as_before(
    world, role, first, send, status, element, english, held
):
    first(world)
    browser = persian_browser(world, role)
    answer = refused(world.server, status, send, browser, world)
    said = persian(text_of(answer.text, element))
    for part in held:
        assert part in said, (part, said)
    browser.http.headers.pop("Accept-Language")  # a browser that asks for no language
    again = refused(world.server, status, send, browser, world)
    assert text_of(again.text, element) == english.format(**world.ids)


def test_a_suspended_sellers_sign_in_is_refused_in_persian(world, admin):
    assert admin.post(f"/api/sellers/{world.ids['seller']}/suspend").status_code == 200
    browser = persian_browser(world, None)
    answer = browser.sign_in(world.key)
    assert answer.status_code == 403
    said = persian(text_of(answer.text, "login-token-error"))
    assert said == "این فروشنده معلق است؛ از مدیر بخواهید دوباره فعالش کند"
    browser.http.headers.pop("Accept-Language")
    again = browser.sign_in(world.key)
    assert text_of(again.text, "login-token-error") == (
        "This seller is suspended; ask the admin to reactivate it"
    )


def test_a_late_refund_is_refused_without_its_english_message_on_a_persian_page(world):
    admin = persian_browser(world, ADMIN)
    link = f"/admin/sales/{world.ids['sale']}/refund"
    assert admin.post_form(link, {"reason": "first"}).status_code == 303
    late = refused(world.server, 409, admin.post_form, link, {"reason": "second"})
    assert "refunded already" not in late.text and 'id="already-refunded"' in late.text


# --- the JSON API stays English -----------------------------------------------------------------

API_REFUSALS = [
    ("/api/sales", {"phone": PHONE, "amount": 10**6}, 409, "insufficient_credit",
     "balance 100,000 toman does not cover 1,000,000 toman"),
    ("/api/sales", {"phone": "0912", "amount": 5}, 422, "validation_error",
     "phone must be an Iranian mobile number such as 09121234567"),
    ("/api/sales", {"phone": PHONE, "amount": 0}, 422, "validation_error",
     "amount must be between 1 and 1,000,000,000 toman"),
    ("/api/sales", {"phone": PHONE, "amount": 5, "extra": 1}, 422, "validation_error",
     "unknown field 'extra'"),
    ("/api/sales/999999999", None, 404, "not_found", "sale 999999999 does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "status", "code", "message"), API_REFUSALS,
                         ids=[case[3] + str(case[2]) for case in API_REFUSALS])  # fmt: skip
def test_the_json_api_answers_english_even_to_a_persian_client(
    world, path, body, status, code, message
):
    headers = {"Accept-Language": "fa-IR,fa;q=0.9"}
    method = "GET" if body is None else "POST"
    answer = world.api.request(method, path, body, headers=headers)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["message"] == message
