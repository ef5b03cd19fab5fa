"""The chart pages: the admin's sales (per day, per hour, top sellers) and a seller's own
sales and balance, drawn by `charts` from `activity`'s figures in the page's language.

Pages of their own (/admin/charts, /seller/charts), linked from the menu, so that the
pages used all day never pay for the charts' reads. A seller's page shows its own
figures only: its id comes from its session, never from the address.
"""

from __future__ import annotations

import datetime

import bottle
import jdatetime

from chargebox import activity
from chargebox.web import charts
from chargebox.web.forms import Site
from chargebox.web.html import language, render
from chargebox.web.i18n import Language
from chargebox.web.sessions import visitor

ADMIN, SELLER = "admin", "seller"


def day_label(speaking: Language, day: datetime.date) -> str:
    """A day short enough for an axis: `Dec 1`, or Jalali `۱۰ آذر`."""
    if speaking.code == "fa":
        return speaking.digits(
            jdatetime.date.fromgregorian(date=day, locale="fa_IR").strftime("%-d %B")
        )
    return f"{day:%b} {day.day}"


def hour_label(speaking: Language, hour: datetime.datetime) -> str:
    """An hour with its day, as the <desc> and tooltips say it (48 hours hold each hour of
    the day twice): `Dec 1, 16:00`, or `۱۰ آذر، ۱۶:۰۰`."""
    comma = "، " if speaking.code == "fa" else ", "
    return day_label(speaking, hour.date()) + comma + hour_tick(speaking, hour)


def hour_tick(speaking: Language, hour: datetime.datetime) -> str:
    """An hour as its axis shows it, short: `16:00`."""
    return speaking.digits(f"{hour:%H}:00")


def hour_ticks(speaking: Language, hours: list[datetime.datetime]) -> list[str]:
    """The 48-hour axis: each midnight's day (`Dec 1`), each noon `12:00`, no other hour.
    Evenly spaced hours showed each hour twice (`02:00`, then `02:00` a day later), and
    an hour with its day is too long for six of them on a phone."""
    return [day_label(speaking, hour.date()) if hour.hour == 0
            else hour_tick(speaking, hour) if hour.hour == 12 else ""
            for hour in hours]  # fmt: skip


def install(pages: bottle.Bottle, site: Site) -> None:
    database = site.service.database

    @pages.get("/admin/charts")
    def admin_charts():
        you, speaking = visitor(site.service, ADMIN), language()
        _, now = speaking.gettext, datetime.datetime.now(datetime.UTC)
        days, hours, top = activity.admin_figures(database, now)
        shown = [
            _figure(speaking, "per-day", _("Sales per day, the last 30 days"),
                    charts.bars, [(day_label(speaking, t.start), t.amount) for t in days]),
            _figure(speaking, "per-hour", _("Sales per hour, the last 48 hours"),
                    charts.bars, [(hour_label(speaking, t.start), t.amount) for t in hours],
                    ticks=hour_ticks(speaking, [t.start for t in hours])),
            _figure(speaking, "top", _("Top sellers by sales, the last 30 days"),
                    charts.ranking, [(row["name"], row["amount"]) for row in top]),
        ]  # fmt: skip
        total = sum(t.amount for t in days), sum(t.sales for t in days)
        return render("charts", title=_("Charts"), visitor=you, figures=shown, total=total)

    @pages.get("/seller/charts")
    def seller_charts():
        you, speaking = visitor(site.service, SELLER), language()
        _, now = speaking.gettext, datetime.datetime.now(datetime.UTC)
        seller_id = you.principal.seller_id
        days, balances = activity.seller_figures(database, seller_id, now)
        shown = [
            _figure(speaking, "per-day", _("Your sales per day, the last 30 days"),
                    charts.bars, [(day_label(speaking, t.start), t.amount) for t in days]),
            _figure(speaking, "balance", _("Your balance at the end of each day, the last 30 days"),
                    charts.line, [(day_label(speaking, day), value) for day, value in balances],
                    empty=_("No credit yet.")),
        ]  # fmt: skip
        total = sum(t.amount for t in days), sum(t.sales for t in days)
        return render("charts", title=_("Charts"), visitor=you, figures=shown, total=total)


def _figure(speaking: Language, ident: str, title: str, draw, points, empty: str = "",
            **drawing) -> dict:  # fmt: skip
    """One chart of the page: its heading and its SVG (markup, made safe by `charts`)."""
    words = charts.Words(title, empty or speaking.gettext("No sales yet."), ident,
                         "؛ " if speaking.code == "fa" else "; ")  # fmt: skip
    return {"ident": ident, "title": title,
            "svg": draw(points, speaking.toman, speaking.direction, words, **drawing)}  # fmt: skip
