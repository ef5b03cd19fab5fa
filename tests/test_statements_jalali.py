"""Jalali days (periods.py): `jday=` statements, and a Persian page's search bounds.

The property tests check periods.py against jdatetime and zoneinfo, not against itself: a
Jalali day, written in any of the three kinds of digits and with either separator, is
the Gregorian `day=` of the same date (Tehran midnight to the next Tehran midnight), and
consecutive days chain; a search bound (`jalali_instant`) is the instant its Jalali wall
time names in Tehran, across Iran's summer times of old. Then the refusals (422 naming
the field, in Persian on a page), the API and the CLI over a real database, both backends.
"""

from __future__ import annotations

import datetime

import jdatetime
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargebox import periods
from chargebox.errors import ValidationError
from tests.support import credited_seller
from tests.test_statements import cli, write_entries
from tests.web_support import SELLER, text_of

DIGITS = {"latin": "0123456789", "persian": "۰۱۲۳۴۵۶۷۸۹", "arabic": "٠١٢٣٤٥٦٧٨٩"}


def written(text: str, script: str) -> str:
    return text.translate(str.maketrans("0123456789", DIGITS[script]))


@st.composite
def jalali_days(draw) -> jdatetime.date:
    year = draw(st.integers(1300, 1600))
    month = draw(st.integers(1, 12))
    leap = jdatetime.date(year, 1, 1).isleap()
    last = 31 if month <= 6 else 30 if month <= 11 or leap else 29  # Esfand: 29, or 30
    return jdatetime.date(year, month, draw(st.integers(1, last)))


@settings(max_examples=300, deadline=None)
@given(day=jalali_days(), script=st.sampled_from(sorted(DIGITS)), sep=st.sampled_from("/-"))
def test_a_jalali_day_is_the_gregorian_day_of_the_same_date_from_tehran_midnight(day, script, sep):
    gregorian = day.togregorian()
    text = written(day.strftime(f"%Y{sep}%m{sep}%d"), script)
    got = periods.period({"jday": text})
    after = gregorian + datetime.timedelta(days=1)
    assert got.start == datetime.datetime(gregorian.year, gregorian.month, gregorian.day,
                                          tzinfo=periods.TEHRAN)  # fmt: skip
    assert got.end == datetime.datetime(after.year, after.month, after.day, tzinfo=periods.TEHRAN)
    assert got.bounds == periods.period({"day": gregorian.isoformat()}).bounds
    following = (day + datetime.timedelta(days=1)).strftime("%Y/%m/%d")
    assert periods.period({"jday": following}).bounds[0] == got.bounds[1]
    # A Persian page's search from that date alone starts at the same Tehran midnight. As
    # instants: a midnight that Iran's old summer time skipped (1359/01/01) is in a gap,
    # and an aware datetime in a gap is never equal to one of another zone (PEP 495).
    started = periods.instant(periods.jalali_instant(text, "from"), "from")
    assert started.timestamp() == got.start.timestamp()


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime.datetime(1950, 1, 1),
                        max_value=datetime.datetime(2200, 1, 1), timezones=st.just(datetime.UTC)),
    script=st.sampled_from(sorted(DIGITS)),
)  # fmt: skip
def test_a_jalali_search_bound_is_the_instant_its_tehran_wall_time_names(moment, script):
    """The wall time as a Persian page shows it (i18n.when), typed back: the same minute.
    In the hour Iran's old summer time repeated (fold 1), the first of the two is meant."""
    moment = moment.replace(second=0, microsecond=0)
    shown = moment.astimezone(periods.TEHRAN)
    text = jdatetime.datetime.fromgregorian(datetime=shown).strftime("%Y/%m/%d %H:%M")
    got = periods.instant(periods.jalali_instant(written(text, script), "to"), "to")
    assert got == (moment if shown.fold == 0 else moment - datetime.timedelta(hours=1))


def test_a_jalali_days_bounds_hold_its_last_second_and_not_the_next_midnight():
    azar_10 = periods.period({"jday": "1405/09/10"})
    assert azar_10.bounds == ("2026-11-30T20:30:00.000000Z", "2026-12-01T20:30:00.000000Z")
    first = periods.jalali_instant("۱۴۰۵/۰۹/۱۰ ۰۰:۰۰", "from")
    last = periods.jalali_instant("1405/9/10 23:59:59", "to")
    midnight = periods.jalali_instant("  ۱۴۰۵-۰۹-۱۱  ", "to")
    start, end = (periods.instant(text, "to") for text in (first, last))
    assert start == azar_10.start and azar_10.start < end < azar_10.end
    assert periods.instant(midnight, "to") == azar_10.end
    assert periods.jalali_instant("1405/09/10 14:30", "from") == "2026-12-01T11:00:00+00:00"
    # Esfand has 30 days in a leap year (1403) only.
    assert periods.period({"jday": "1403/12/30"}).start.date() == datetime.date(2025, 3, 20)
    assert periods.period({"jmonth": "۱۴۰۵/۰۹"}) == periods.period({"jmonth": "1405-09"})
    # one digit for the month, as jday takes it (helper-69)
    assert periods.period({"jmonth": "1405/9"}) == periods.period({"jmonth": "1405-09"})
    assert periods.as_typed({"jmonth": "2026/9"}) == {"month": "2026-09"}


@pytest.mark.parametrize("script", sorted(DIGITS))
def test_a_gregorian_date_typed_on_a_persian_page_is_read_as_gregorian(script):
    """2026-12-01 on a Persian page means today, not a day of Jalali 2026 (Gregorian 2647)."""
    for typed, same in [("2026-12-01", "1405/09/10"), ("2026/12/1 14:30", "1405/09/10 14:30"),
                        ("1999-3-21", "1378/01/01")]:  # fmt: skip
        assert periods.jalali_instant(written(typed, script), "from") == periods.jalali_instant(
            same, "from"
        ), typed
    assert periods.jalali_instant(written("2199/12/31 23:59:59", script), "to") == (
        "2199-12-31T20:29:59+00:00"
    )
    assert periods.jalali_instant("1899/01/01", "from").startswith("2520-03-")  # still Jalali
    assert periods.jalali_instant("2200/01/01", "from").startswith("2821-03-")
    with pytest.raises(ValidationError) as refused:
        periods.jalali_instant(written("2026-02-29", script), "to")
    assert (refused.value.field, refused.value.message) == ("to", "to: 2026-02-29 is not a day")


def test_a_gregorian_year_typed_into_a_pages_jalali_field_is_that_gregorian_period():
    assert periods.as_typed({"jday": "2026/12/01"}) == {"day": "2026-12-01"}
    typed = periods.as_typed({"jday": "2026-3-1", "format": "csv"})
    assert typed == {"day": "2026-03-01", "format": "csv"}
    assert periods.as_typed({"jmonth": "2026/12"}) == {"month": "2026-12"}
    for jalali in ({"jday": "1405/09/10"}, {"jmonth": "1405-09"}, {"jday": "2200/01/01"}):
        assert periods.as_typed(jalali) == jalali  # a Jalali year stays Jalali
    both = {"jday": "2026/12/01", "day": "2026-12-02"}
    assert periods.as_typed(both) == both  # left for period() to refuse: two periods
    refusals = (({"jday": "2026/02/30"}, "jday", "jday: 2026-02-30 is not a day"),
                ({"jmonth": "2026-13"}, "jmonth", "jmonth must be a month"))  # fmt: skip
    for typed, field, said in refusals:
        with pytest.raises(ValidationError) as refused:
            periods.as_typed(typed)
        assert refused.value.field == field and refused.value.message.startswith(said)


NOT_A_DAY = ["1405/12/30", "1405/12/31", "1405/13/01", "1405/00/10", "1405/09/00", "1405/07/31",
             "0000/01/01", "9001/01/01", "1405/09", "1405/09-10", "14050910", "1405.09.10",
             "05/09/10", "1405/09/10x", "", "۱۴۰۵/۰۹/۱۰ ۱۴:۳۰"]  # fmt: skip


@pytest.mark.parametrize("text", NOT_A_DAY)
def test_a_jday_that_is_not_a_jalali_day_is_refused_naming_jday(text):
    with pytest.raises(ValidationError) as refused:
        periods.period({"jday": text})
    assert refused.value.field == "jday"


NOT_A_TIME = ["1405/09/10 24:00", "1405/09/10 12:60", "1405/09/10 12:30:60", "1405/09/10T12:30",
              "2026-12-01T10:00"]  # fmt: skip


@pytest.mark.parametrize("text", [*NOT_A_DAY[:-1], *NOT_A_TIME])
def test_a_search_bound_that_is_not_a_jalali_time_is_refused_naming_its_field(text):
    with pytest.raises(ValidationError) as refused:
        periods.jalali_instant(text, "to")
    assert refused.value.field == "to"


def test_the_api_gives_a_jalali_days_statement_as_the_gregorian_days(make_seller):
    _, seller = make_seller(credit=10_000)
    assert seller.post("/api/sales", {"phone": "09121234567", "amount": 1000}).status_code == 201
    today = datetime.datetime.now(periods.TEHRAN).date()
    jalali = jdatetime.date.fromgregorian(date=today)
    by_day = seller.get(f"/api/statements?day={today.isoformat()}").json()
    for text in (jalali.strftime("%Y/%m/%d"), written(jalali.strftime("%Y-%m-%d"), "persian")):
        by_jday = seller.get("/api/statements", params={"jday": text})
        assert by_jday.status_code == 200, by_jday.text
        assert by_jday.json() == by_day and by_day["closing_balance"] == 9000
    for text in ("1405/12/30", "1405/13/01", "1405/09/00", "1405-9"):
        refused = seller.get("/api/statements", params={"jday": text})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_error"
        assert refused.json()["error"]["field"] == "jday"
    both = seller.get("/api/statements?jday=1405/09/10&day=2026-12-01")
    assert both.status_code == 422 and both.json()["error"]["field"] == "day"


def test_a_refused_jday_is_said_in_persian_on_a_persian_page(world):
    browser = world.browser(SELLER)
    browser.http.cookies.set("lang", "fa")
    answer = browser.get("/seller/statement?jday=%DB%B1%DB%B4%DB%B0%DB%B5/12/30")
    assert answer.status_code == 422
    said = text_of(answer.text, "statement-jday-error")
    assert said == "روز شمسی: ۱۴۰۵/۱۲/۳۰ روزی از تقویم شمسی نیست"


def test_the_cli_takes_a_jalali_day(service, config):
    seller = credited_seller(service, 0, "jalali shell")
    write_entries(service, seller["id"], [(10, 1000), (20, -300)])  # 2026-12-01, Tehran
    sid = str(seller["id"])
    by_day = cli(config, "--seller", sid, "--day", "2026-12-01", "--csv")
    by_jday = cli(config, "--seller", sid, "--jday", "1405/09/10", "--csv")
    assert by_jday.returncode == 0, by_jday.stderr
    assert by_jday.stdout == by_day.stdout and b"closing,,,,700," in by_jday.stdout
    refused = cli(config, "--seller", sid, "--jday", "1405/12/30")
    assert refused.returncode == 2 and b"not a day of the Jalali calendar" in refused.stderr


def test_a_spring_forward_days_midnight_is_shown_as_the_tehran_time_it_was():
    """2022-03-22: Tehran's clocks went from 00:00 to 01:00 (+03:30 to +04:30). The day
    starts at 20:30Z, which Tehran's clocks read as 01:00+04:30, as its entries show it;
    the bound kept the midnight that never was (00:00+03:30)."""
    day = periods.period({"day": "2022-03-22"})
    assert periods.local(day.start) == "2022-03-22T01:00:00.000000+04:30"
    assert periods.local(day.start) == periods.Localiser()(periods.stamp(day.start))
    assert periods.local(day.end) == "2022-03-23T00:00:00.000000+04:30"


def test_an_offsets_plus_sent_bare_in_a_query_string_is_read_as_the_plus_it_was():
    """A `+` in a query string arrives as a space: the statement's own `to`, sent back as
    the next `from` without %2B, was a 422."""
    sent = periods.instant("2026-12-01T08:30:00 03:30", "from")
    assert sent == periods.instant("2026-12-01T08:30:00+03:30", "from")
    assert sent.utcoffset() == datetime.timedelta(hours=3, minutes=30)
    for text in ("2026-12-01T08:30:00  3:30", "2026-12-01 08:30:00", " 2026-12-01T08:30:00"):
        with pytest.raises(ValidationError):
            periods.instant(text, "from")
