"""The chart pages and what they load: /admin/charts and /seller/charts on a real server
(both backends), each role's own figures only, hostile names escaped, Persian digits in
Persian; the font served by us with its media type; no page loads anything from outside.
(Which role may open which page: the route sweep of test_web_pages.py.)
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import requests

from chargebox import clock
from chargebox.periods import TEHRAN
from chargebox.web.chart_pages import day_label, hour_label
from chargebox.web.i18n import LANGUAGE
from chargebox.web.pages import FONT
from tests.support import ROOT, Api, new_seller
from tests.web_support import ADMIN, SELLER, TIMEOUT, Browser

SVG = "{http://www.w3.org/2000/svg}"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
PHONE = "09121234567"


def charts_of(page: str) -> dict[str, ElementTree.Element]:
    """Each chart of a page by its section id, parsed as XML (so it must be well-formed)."""
    found = re.findall(r'<section class="card" id="chart-([\w-]+)">.*?(<svg .*?</svg>)', page, re.S)
    assert found, page[:2000]
    return {ident: ElementTree.fromstring(svg) for ident, svg in found}


def figures(chart: ElementTree.Element) -> str:
    return re.sub("[\u2066-\u2069]", "", chart.find(f"{SVG}desc").text)  # the isolates


def sell(api: Api, *amounts: int) -> list[tuple[str, int]]:
    """Sell each amount; the sales' (created_at, amount), to place them as the server did."""
    made = []
    for amount in amounts:
        answer = api.post("/api/sales", {"phone": PHONE, "amount": amount})
        assert answer.status_code == 201, answer.text
        made.append((answer.json()["created_at"], amount))
    return made


def shown_amounts(chart: ElementTree.Element) -> dict[str, str]:
    """A chart's periods that are not zero, label: amount as its <desc> says them."""
    periods = [entry.rsplit(": ", 1) for entry in figures(chart).split("; ")]
    return {label: amount for label, amount in periods if not amount.startswith("0 ")}


def placed(sales: list[tuple[str, int]], label) -> dict[str, str]:
    """What a chart should show for these sales: each in the period of its own stamp, so
    that a Tehran hour or day beginning between the sale and the page changes nothing
    (the page reads the clock itself; the test does not guess its answer)."""
    totals: dict[str, int] = {}
    for created_at, amount in sales:
        key = label(LANGUAGE["en"], clock.parse(created_at).astimezone(TEHRAN))
        totals[key] = totals.get(key, 0) + amount
    return {key: f"{amount:,} toman" for key, amount in totals.items()}


def by_day(language, moment):
    return day_label(language, moment.date())


def test_a_seller_sees_its_own_sales_and_balance_and_nobody_elses(world, admin):
    _, other_key = new_seller(admin, "someone else", 500_000)
    other = world.server.seller(other_key)
    sell(other, 300_000)
    other.close()
    seller = world.browser(SELLER)
    empty = charts_of(seller.get("/seller/charts").text)
    assert figures(empty["per-day"]) == "No sales yet."
    sold = sell(world.api, 1_000, 2_500)
    page = seller.get("/seller/charts")
    assert page.status_code == 200 and "nav-charts" in page.text
    shown = charts_of(page.text)
    assert len(figures(shown["per-day"]).split("; ")) == 30
    assert shown_amounts(shown["per-day"]) == placed(sold, by_day)
    balances = figures(shown["balance"]).split("; ")
    assert balances[-1].endswith(f": {world.balance():,} toman"), balances[-1]
    assert "300,000" not in page.text and "someone else" not in page.text
    assert "3,500 toman in 2 sales" in page.text
    note = "Gross: refunded sales are still counted."  # under each chart of sales only
    assert page.text.count(note) == 1 and 'id="chart-per-day-gross"' in page.text


def test_the_admin_sees_every_sellers_sales_and_a_hostile_name_only_as_text(fresh_server):
    admin = fresh_server.admin()
    hostile = '<script>alert("x")</script> & "quoted"'
    _, key = new_seller(admin, hostile, 2_000_000)
    _, plain_key = new_seller(admin, "Plain shop", 100_000)
    sold = []
    for credential, amounts in ((key, (900_000, 100_000)), (plain_key, (5_000,))):
        api = fresh_server.seller(credential)
        sold += sell(api, *amounts)
        api.close()
    browser = Browser(fresh_server.url)
    assert browser.sign_in(fresh_server.admin_token).status_code == 303
    page = browser.get("/admin/charts")
    assert page.status_code == 200 and "<script>alert" not in page.text
    shown = charts_of(page.text)
    assert set(shown) == {"per-day", "per-hour", "top"}
    assert figures(shown["top"]) == f"{hostile}: 1,000,000 toman; Plain shop: 5,000 toman"
    names = [node.text for node in shown["top"].iter(f"{SVG}text")]
    assert any(hostile[:10] in (name or "") for name in names)
    assert shown_amounts(shown["per-day"]) == placed(sold, by_day)
    assert shown_amounts(shown["per-hour"]) == placed(sold, hour_label)
    admin.close()


def test_a_persian_chart_page_writes_persian_digits_right_to_left(world):
    seller = world.browser(SELLER)
    sell(world.api, 12_000)
    seller.http.headers["Accept-Language"] = "fa-IR,fa;q=0.9,en;q=0.5"
    page = seller.get("/seller/charts").text
    assert 'dir="rtl"' in page and "نمودارها" in page
    assert "ناخالص: فروش‌هایی که برگشت خورده‌اند هم شمرده شده‌اند." in page
    days = figures(charts_of(page)["per-day"])
    sold = [day for day in days.split("؛ ") if "۱۲٬۰۰۰ تومان" in day]  # a Persian list
    assert len(sold) == 1 and "; " not in days and not re.search("[0-9]", days), days


def test_the_font_is_ours_with_its_media_type_a_long_cache_and_its_licence(server):
    font = requests.get(f"{server.url}/static/{FONT}", timeout=TIMEOUT)
    assert font.status_code == 200 and font.headers["Content-Type"] == "font/woff2"
    assert font.content[:4] == b"wOF2" and len(font.content) < 100_000
    assert "max-age=31536000" in font.headers["Cache-Control"]
    licence = requests.get(f"{server.url}/static/vazirmatn-33.0.3-OFL.txt", timeout=TIMEOUT)
    assert licence.status_code == 200 and "SIL OPEN FONT LICENSE" in licence.text
    css = requests.get(f"{server.url}/static/app.css", timeout=TIMEOUT).text
    assert f'url("{FONT}")' in css and "font-family: Vazirmatn," in css
    login = requests.get(f"{server.url}/login", timeout=TIMEOUT)
    assert "font-src 'self'" in login.headers["Content-Security-Policy"]
    assert requests.get(f"{server.url}/static/nope.woff2", timeout=TIMEOUT).status_code == 404


def external(text: str) -> list[str]:
    return [url for url in re.findall(r"https?://[^\s\"')<>]*", text) if url != SVG_NAMESPACE]


def test_no_page_loads_anything_from_outside(world):
    """The templates, the stylesheet and the script name no outside address (the SVG
    namespace is a name, not a load), nor do the pages as served. The font's licence, kept
    word for word as the OFL asks, names its authors' sites; no page loads it."""
    web = ROOT / "chargebox" / "web"
    for path in [*web.glob("views/*.tpl"), *web.glob("static/*.css"), *web.glob("static/*.js")]:
        assert not external(path.read_text("utf-8")), path
    admin, seller = world.browser(ADMIN), world.browser(SELLER)
    for browser, path in ((admin, "/admin/charts"), (seller, "/seller/charts"), (seller, "/seller"),
                          (admin, "/admin"), (world.browser(), "/login")):  # fmt: skip
        assert not external(browser.get(path).text), path
