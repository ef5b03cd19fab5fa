"""The admin's queue of pending credit requests on `/admin`: counted, paged and filtered.

One seller floods the queue with 105 requests before another files one, so the
other's request is not among the oldest 100. It must still be reachable, by the
links that page through the queue and by the per-seller filter, and every count
on the page must be true. A decision taken from a filtered page returns to it
(with a seller of its own, whose requests it decides all, so the queue stays).
"""

from __future__ import annotations

import html
import re

import pytest

from tests.support import ADMIN_TOKEN, new_seller
from tests.web_support import Browser, text_of

FLOOD = 105


@pytest.fixture(scope="module")
def queue(tmp_path_factory, new_server):
    """A server whose cap allows the flood; (server, flooder, other, their request ids)."""
    home = tmp_path_factory.mktemp("queue")
    with new_server(home, env={"CHARGEBOX_MAX_PENDING_REQUESTS": "200"}) as server:
        admin = server.admin()
        ids = {}
        for name, count in (("flooder", FLOOD), ("other", 1)):
            seller, key = new_seller(admin, name)
            own = server.seller(key)
            ids[seller["id"]] = [
                own.post("/api/credit-requests", {"amount": 1}).json()["id"] for _ in range(count)
            ]
            own.close()
        admin.close()
        (flooder, flooded), (other, others) = ids.items()
        yield server, flooder, other, flooded, others


@pytest.fixture
def browser(queue):
    admin = Browser(queue[0].url)
    assert admin.sign_in(ADMIN_TOKEN).status_code == 303
    yield admin
    admin.http.close()


def rows(page: str) -> list[int]:
    return [int(ident) for ident in re.findall(r'<tr id="request-(\d+)">', page)]


def link(page: str, ident: str) -> str | None:
    found = re.search(rf'<a href="([^"]*)" id="{ident}">', page)
    return html.unescape(found[1]) if found else None


def walk(browser: Browser, path: str) -> list[list[int]]:
    """The request ids of each page, following the next links from `path` to the end."""
    pages = []
    while path:
        answer = browser.get(path)
        assert answer.status_code == 200, answer.text
        pages.append(rows(answer.text))
        path = link(answer.text, "next-pending")
        assert len(pages) < 10, "the next links never end"
    return pages


def test_the_queue_counts_every_pending_request_and_pages_through_all_of_them(queue, browser):
    _, _, _, flooded, others = queue
    first = browser.get("/admin").text
    assert text_of(first, "pending-total") == f"{FLOOD + 1:,}"
    assert link(first, "first-pending") is None
    pages = walk(browser, "/admin")
    assert [len(page) for page in pages] == [100, FLOOD + 1 - 100]
    assert sum(pages, []) == flooded + others  # each once, oldest first
    assert others[0] in pages[1]
    second = browser.get(link(first, "next-pending")).text
    assert link(second, "first-pending") == "/admin"
    assert text_of(second, "pending-total") == f"{FLOOD + 1:,}"


def test_the_seller_filter_shows_that_sellers_requests_and_counts(queue, browser):
    _, flooder, other, flooded, others = queue
    page = browser.get(f"/admin?seller_id={other}").text
    assert rows(page) == others
    assert text_of(page, "pending-of-seller") == "1"
    assert text_of(page, "pending-total") == f"{FLOOD + 1:,}"
    options = re.findall(r'<option value="(\d*)"( selected)?>([^<]*)</option>', page)
    assert [(value, chosen) for value, chosen, _ in options] == [
        ("", ""),
        (str(flooder), ""),
        (str(other), " selected"),
    ]
    assert options[1][2].endswith(f"#{flooder} ({FLOOD})") and "flooder" in options[1][2]
    assert options[2][2].endswith(f"#{other} (1)")
    assert walk(browser, f"/admin?seller_id={flooder}") == [flooded[:100], flooded[100:]]


def test_a_filter_for_a_seller_with_nothing_waiting_shows_an_empty_queue(queue, browser):
    _, _, _, flooded, _ = queue
    answer = browser.get("/admin?seller_id=999999")
    assert answer.status_code == 200 and rows(answer.text) == []
    assert 'id="no-pending"' in answer.text
    assert text_of(answer.text, "pending-of-seller") == "0"
    ignored = browser.get("/admin?seller_id=abc&pending_after=-5")  # not ids: no filter
    assert ignored.status_code == 200 and rows(ignored.text) == flooded[:100]


def test_deciding_from_a_filtered_page_returns_to_it_and_updates_the_counts(queue, browser):
    server = queue[0]
    admin = server.admin()
    seller, key = new_seller(admin, "decider")
    own = server.seller(key)
    filed = [own.post("/api/credit-requests", {"amount": 1}).json()["id"] for _ in range(3)]
    view = f"?seller_id={seller['id']}&pending_after={filed[0]}"
    page = browser.get("/admin" + view).text
    assert rows(page) == filed[1:]
    action = f"/admin/credit-requests/{filed[1]}/reject{view}"
    assert f'action="{html.escape(action)}"' in page
    decided = browser.post_form(action, {})
    assert decided.status_code == 303
    assert decided.headers["Location"] == f"/admin?rejected={filed[1]}&" + view[1:]
    after = browser.get(decided.headers["Location"]).text
    assert f"#{filed[1]}" in text_of(after, "notice")
    assert rows(after) == filed[2:]
    assert text_of(after, "pending-of-seller") == "2"
    assert text_of(after, "pending-total") == f"{FLOOD + 1 + 2:,}"
    again = browser.post_form(action, {})
    assert again.status_code == 409 and rows(again.text) == filed[2:]  # the same view
    for ident in (filed[0], filed[2]):  # leave the queue as the other tests expect it
        assert admin.post(f"/api/credit-requests/{ident}/reject").status_code == 200
    for api in (admin, own):
        api.close()
