"""The statement downloads and the sale search on the pages, as a browser uses them.

The seller's page and the admin's seller page offer a day, a month and a Jalali month
as a CSV download (the same statement as GET /api/statements), and in Persian a Jalali
day and a Jalali month typed as text (no Gregorian date picker); the seller's search
finds its sales by phone, order id (Idempotency-Key) and Tehran time, and only its own,
in Persian by Jalali dates and times.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import html
import io
import re
import urllib.parse

import jdatetime

from chargebox import clock, periods
from chargebox.web import i18n
from tests.support import new_seller
from tests.web_support import ADMIN, SELLER, text_of, value_of

PERSIAN = i18n.LANGUAGE["fa"]
STATEMENT_INPUT = re.compile(
    r'<input id="statement-(\w+)-value" name="\w+" type="([\w-]+)"[^>]*placeholder="([^"]*)"'
)

PHONE = "09121234567"


def sell(api, key: str, phone: str = PHONE) -> dict:
    made = api.post("/api/sales", {"phone": phone, "amount": 1000},
                    headers={"Idempotency-Key": key})  # fmt: skip
    assert made.status_code == 201, made.text
    return made.json()


def lines_of(answer) -> list[dict]:
    """A page's CSV download: marked UTF-8 (a BOM), so that Excel reads its Persian text."""
    assert answer.status_code == 200, answer.text[:2000]
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
    assert answer.content.startswith(codecs.BOM_UTF8), answer.content[:20]
    return list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))


def test_the_seller_and_the_admin_download_the_same_statement_from_their_pages(world):
    sell(world.api, "page-1")
    seller, admin = world.browser(SELLER), world.browser(ADMIN)
    page = seller.get("/seller").text
    for name in ("day", "month", "jmonth"):
        assert f'id="statement-{name}"' in page and 'action="/seller/statement"' in page
    sid = world.seller["id"]
    assert f'action="/admin/sellers/{sid}/statement"' in admin.get(f"/admin/sellers/{sid}").text
    query = "from=2000-01-01&to=2100-01-01&format=csv"
    downloaded = seller.get(f"/seller/statement?{query}")
    mine = lines_of(downloaded)
    theirs = lines_of(admin.get(f"/admin/sellers/{sid}/statement?{query}"))
    assert mine == theirs
    # The API's is the same file without the mark (a program reads it, not Excel).
    assert downloaded.content == codecs.BOM_UTF8 + world.api.get(f"/api/statements?{query}").content
    assert [line["line"] for line in mine[:3]] == ["opening", "entry", "entry"]
    closing = next(line for line in mine if line["line"] == "closing")
    assert int(closing["balance_after"]) == world.balance() == 99_000
    assert lines_of(seller.get("/seller/statement?jmonth=1405-09"))[0]["line"] == "opening"


def test_a_bad_period_shows_its_page_again_with_the_reason_beside_the_field(world):
    """A period refused is the seller's (or the admin's seller) page again, in 422, the
    period kept as typed in its field and the reason beside it: not a bare error page
    that loses the form."""
    sid = world.seller["id"]
    for who, path in ((SELLER, "/seller"), (ADMIN, f"/admin/sellers/{sid}")):
        browser = world.browser(who)
        answer = browser.get(f"{path}/statement?format=csv&day=2026-13-01")
        assert answer.status_code == 422 and answer.headers["Content-Type"].startswith("text/html")
        page = answer.text
        assert "Day must be a date" in text_of(page, "statement-day-error")  # a sentence
        assert value_of(page, "statement-day-value") == "2026-13-01"
        assert 'aria-describedby="statement-day-error"' in page
        assert value_of(page, "statement-month-value") == ""  # the other forms as they were
        assert 'id="find-link"' in page if who == SELLER else 'id="adjust-form"' in page
    # A widget's field refused comes back as text: a date widget drops what it cannot read.
    seller = world.browser(SELLER)
    for name, typed in (("day", "2026-13-01"), ("month", "2026-13")):
        page = seller.get(f"/seller/statement?format=csv&{name}={typed}").text
        assert re.search(rf'id="statement-{name}-value" name="{name}" type="text"', page)
        assert value_of(page, f"statement-{name}-value") == typed
    # A Jalali day refused on an English page: its example Jalali, its name the label's.
    page = seller.get("/seller/statement?format=csv&jday=1405/12/30").text
    assert 'placeholder="1405-09-10"' in page
    assert text_of(page, "statement-jday-error").startswith("Jalali day: 1405/12/30 is not")
    # A Gregorian year typed into a Persian page's Jalali field, refused, beside it too.
    browser = world.browser(SELLER)
    browser.http.cookies.set("lang", "fa")
    typed = "۲۰۲۶/۰۲/۳۰"
    answer = browser.get(f"/seller/statement?format=csv&jday={urllib.parse.quote(typed)}")
    assert answer.status_code == 422 and text_of(answer.text, "statement-jday-error")
    assert value_of(answer.text, "statement-jday-value") == typed
    # An address no form sends (from and to, two periods, none, a format of its own) has no
    # field to show it beside: the error page says why.
    for query in (
        "from=2026-12-01&to=bad",
        "day=bad&from=x",
        "from=2026-12-01",
        "",
        "day=2026-12-01",
    ):
        fmt = "xml" if query == "day=2026-12-01" else "csv"
        bare = world.browser(SELLER).get(f"/seller/statement?format={fmt}&{query}")
        assert bare.status_code == 422 and text_of(bare.text, "error-message"), query


def test_a_seller_finds_its_sale_by_phone_order_id_and_tehran_time_and_not_anothers(
    world, make_seller
):
    mine = sell(world.api, "order-77", "09351112233")
    _, other = make_seller(credit=10_000)
    sell(other, "order-77", "09351112233")
    browser = world.browser(SELLER)
    for query in ("phone=%DB%B0%DB%B9%DB%B3%DB%B5+111+2233", "idempotency_key=order-77",
                  "phone=09351112233&from=2000-01-01T00%3A00"):  # fmt: skip
        page = browser.get(f"/seller/sales/found?{query}")
        assert page.status_code == 200, page.text[:2000]
        rows = page.text.split('id="sales-found"')[1].split("</table>")[0]
        assert rows.count("<tr>") == 2 and f"<td>{mine['id']}</td>" in rows, query
    nothing = browser.get("/seller/sales/found?idempotency_key=order-78")
    assert 'id="sales-found"' not in nothing.text and "No sale matches." in nothing.text
    refused = browser.get("/seller/sales/found?phone=12345")
    assert refused.status_code == 422
    assert text_of(refused.text, "find-phone-error")
    assert 'id="find-form"' in browser.get("/seller/sales/found").text


def test_found_sales_show_their_order_ids_and_no_other_sellers(world, make_seller):
    """Each sale found shows its order id (the Idempotency-Key it was sold with, escaped);
    an unkeyed sale shows none; another seller's keyed sale to the same number is not
    shown."""
    keyed = sell(world.api, "order<&>-88", "09351112299")
    plain = world.api.post("/api/sales", {"phone": "09351112299", "amount": 1}).json()
    _, other = make_seller(credit=10_000)
    sell(other, "theirs-88", "09351112299")
    page = world.browser(SELLER).get("/seller/sales/found?phone=09351112299").text
    rows = page.split('id="sales-found"')[1].split("</table>")[0]
    cells = dict(re.findall(r'<tr><td>([0-9]+)</td>.*?<td class="order">(.*?)</td>', rows, re.S))
    assert cells.keys() == {str(keyed["id"]), str(plain["id"])}, cells
    assert cells[str(plain["id"])] == ""
    assert (
        '<span class="order-id" dir="ltr" translate="no">order&lt;&amp;&gt;-88</span>'
        in cells[str(keyed["id"])]
    )


def test_a_browser_time_at_the_calendars_ends_is_read_or_refused_in_plain_words(world):
    """A `datetime-local` before 1946 (Tehran's offset then had seconds) was refused as
    not ISO 8601, and so was one with milliseconds (a field whose step is under a second);
    one in the year 1 (no UTC instant) is outside the years, so said."""
    browser = world.browser(SELLER)
    old = browser.get("/seller/sales/found?from=1900-01-01T00%3A00")
    assert old.status_code == 200, old.text[:2000]
    fine = browser.get("/seller/sales/found?from=2026-12-01T10%3A00%3A00.250")  # step < 1 s
    assert fine.status_code == 200, fine.text[:2000]
    first = browser.get("/seller/sales/found?from=0001-01-01T00%3A00")
    assert first.status_code == 422
    assert "outside the years 1 to 9998" in first.text
    for typed in ("1405/09/16", "yesterday", "2026-12-01 10:00"):  # said as a person types
        refused = browser.get(f"/seller/sales/found?from={urllib.parse.quote(typed)}")
        assert refused.status_code == 422, typed
        assert "From must be a date and time in Tehran, as 2026-12-01T14:30, or a date" in (
            refused.text
        ), refused.text[:3000]
        assert "ISO 8601" not in refused.text
    for written in ("2026-12-01", "2026-12-01T08:30:00+03:30", "2026-12-01T05:00:00Z"):
        assert browser.get(f"/seller/sales/found?from={urllib.parse.quote(written)}").ok


def persian(browser):
    browser.http.cookies.set("lang", "fa")
    return browser


def jalali(moment: datetime.datetime, form: str = "%Y/%m/%d") -> str:
    """A moment's Tehran wall time, Jalali, in Persian digits, as a clerk types it."""
    shown = jdatetime.datetime.fromgregorian(datetime=moment.astimezone(periods.TEHRAN))
    return PERSIAN.digits(shown.strftime(form))


def test_persian_pages_offer_jalali_days_and_months_typed_english_its_date_pickers(world):
    sid = world.seller["id"]
    english = world.browser(SELLER).get("/seller").text
    assert STATEMENT_INPUT.findall(english) == [
        ("day", "date", "2026-12-01"), ("month", "month", "2026-12"), ("jmonth", "text", "1405-09")
    ]  # fmt: skip
    today = PERSIAN.today()
    for page in (persian(world.browser(SELLER)).get("/seller").text,
                 persian(world.browser(ADMIN)).get(f"/admin/sellers/{sid}").text):  # fmt: skip
        assert STATEMENT_INPUT.findall(page) == [
            ("jday", "text", today), ("jmonth", "text", today[:7])
        ]  # fmt: skip
        assert 'type="date"' not in page and 'type="month"' not in page


def test_a_jalali_days_statement_from_a_persian_page_is_the_apis_gregorian_day(world):
    made = world.api.post("/api/sales", {"phone": PHONE, "amount": 2500})
    assert made.status_code == 201, made.text
    when = clock.parse(made.json()["created_at"])  # its Tehran day, even at midnight
    day = when.astimezone(periods.TEHRAN).date().isoformat()
    by_api = world.api.get(f"/api/statements?day={day}").json()
    assert by_api["closing_balance"] == world.balance() and by_api["count"] >= 1
    sid = world.seller["id"]
    typed = urllib.parse.quote(jalali(when))  # ۱۴۰۵/۰۹/۱۰, as typed into the form
    pages = ((persian(world.browser(SELLER)), "/seller/statement"),
             (persian(world.browser(ADMIN)), f"/admin/sellers/{sid}/statement"))  # fmt: skip
    # Today's Gregorian date typed into the Jalali field is that day (not Jalali 2026).
    gregorian = urllib.parse.quote(PERSIAN.digits(day.replace("-", "/")))
    for browser, path in pages:
        for as_typed in (typed, gregorian):
            lines = lines_of(browser.get(f"{path}?format=csv&jday={as_typed}"))
            assert int(lines[0]["balance_after"]) == by_api["opening_balance"]
            closing = next(line for line in lines if line["line"] == "closing")
            assert int(closing["balance_after"]) == by_api["closing_balance"]
            assert sum(line["line"] == "entry" for line in lines) == by_api["count"]
    month = world.api.get(f"/api/statements?month={day[:7]}").json()
    lines = lines_of(pages[0][0].get(f"/seller/statement?format=csv&jmonth={day[:7]}"))
    assert sum(line["line"] == "entry" for line in lines) == month["count"] >= 1
    # The API's jday stays Jalali whatever its year: 2026/12/01 is a day of Jalali 2026.
    assert world.api.get(f"/api/statements?jday={day.replace('-', '/')}").json()["count"] == 0


def test_find_a_sale_pages_through_every_match_newest_first(world, admin):
    """The newest sale first (a frequent customer's latest is what a clerk looks for); past
    a page (100), each page links the older ones from its last sale and back to the newest,
    keeping the search: every match is reachable, none twice, and no other seller's,
    though it sold to the same number in between; a page that ends the matches exactly
    (200 of them) links no empty page after it."""
    phone = "09357778899"
    _, key = new_seller(admin, "next door", 1_000)
    other = world.server.seller(key)
    made = []
    for n in range(200):
        made.append(world.api.post("/api/sales", {"phone": phone, "amount": 1}).json()["id"])
        if n % 20 == 0:
            assert other.post("/api/sales", {"phone": phone, "amount": 1}).status_code == 201
    other.close()
    browser, seen, headings = world.browser(SELLER), [], []
    url = f"/seller/sales/found?phone={phone}"
    while url:
        page = browser.get(url)
        assert page.status_code == 200, page.text[:2000]
        seen += [int(n) for n in re.findall(r"<tr><td>([0-9]+)</td>", page.text)]
        headings.append(text_of(page.text, "found-title"))
        first = re.search(r'<a href="([^"]+)" id="first-found"', page.text)
        assert (first is None) == (len(headings) == 1) and value_of(
            page.text, "find-phone"
        ) == phone
        found = re.search(r'<a href="([^"]+)" id="older-found"', page.text)
        url = html.unescape(found[1]) if found else None
    assert seen == made[::-1]
    assert headings == [
        "Sales found, newest first",
        f"Sales found before sale #{made[100]}, newest first",
    ]
    assert html.unescape(first[1]) == f"/seller/sales/found?phone={phone}"
    past = browser.get(f"/seller/sales/found?phone={phone}&before_id={made[0]}").text
    assert "No more sales match." in past and 'id="first-found"' in past
    # a sale made since: the first page shows it first; an older page goes on as it was
    newest = world.api.post("/api/sales", {"phone": phone, "amount": 1}).json()["id"]
    top = browser.get(f"/seller/sales/found?phone={phone}").text
    assert re.findall(r"<tr><td>([0-9]+)</td>", top)[:2] == [str(newest), str(made[-1])]


def test_a_persian_clerk_finds_a_sale_by_jalali_date_and_time(world):
    made = world.api.post("/api/sales", {"phone": "09351112233", "amount": 1000}).json()
    when = clock.parse(made["created_at"])
    browser = persian(world.browser(SELLER))
    form = browser.get("/seller/sales/found").text
    assert "datetime-local" not in form and value_of(form, "find-from") == ""
    assert f'placeholder="{PERSIAN.today()} {PERSIAN.digits("14:30")}"' in form
    day_after = jalali(when + datetime.timedelta(days=1))

    def found(start: str, end: str) -> list[str]:
        query = urllib.parse.urlencode({"phone": "09351112233", "from": start, "to": end})
        page = browser.get(f"/seller/sales/found?{query}")
        assert page.status_code == 200, page.text[:2000]
        return re.findall(r"<tr><td>([0-9۰-۹]+)</td>", page.text)

    shown_id = PERSIAN.plain_number(made["id"])
    assert found(jalali(when), day_after) == [shown_id]  # from its Tehran midnight
    minute = jalali(when, "%Y/%m/%d %H:%M")
    assert found(minute, day_after) == [shown_id]  # from the minute it was sold
    assert found(jalali(when - datetime.timedelta(days=1)), minute) == []  # before that minute
    # A date alone in "up to" counts that whole day: one day typed twice finds that day.
    assert found(jalali(when), jalali(when)) == [shown_id]
    day_before = jalali(when - datetime.timedelta(days=1))
    assert found(day_before, day_before) == []
    latin = jdatetime.datetime.fromgregorian(datetime=when.astimezone(periods.TEHRAN))
    assert found(latin.strftime("%Y-%m-%d"), day_after) == [shown_id]  # Latin digits, dashes
    tehran = when.astimezone(periods.TEHRAN)  # its Gregorian day, as a date picker gives it
    assert found(tehran.strftime("%Y-%m-%d"), day_after) == [shown_id]
    for typed, field in (
        ("۱۴۰۵/۱۲/۳۰", "from"),
        ("۱۴۰۵/۰۹/۱۰ ۲۵:۰۰", "to"),
        ("2026-12-01T10:30", "from"),
    ):
        refused = browser.get(f"/seller/sales/found?{urllib.parse.urlencode({field: typed})}")
        assert refused.status_code == 422, typed
        said = text_of(refused.text, f"find-{field}-error")
        assert said and not re.search(r"[A-Za-z]", said.replace(typed, "")), said
        assert value_of(refused.text, f"find-{field}") == typed  # what was typed, shown back
    english = world.browser(SELLER).get("/seller/sales/found").text
    assert english.count('type="datetime-local"') == 2
