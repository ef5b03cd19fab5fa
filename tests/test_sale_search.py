"""A search of sales (sale_search.py) against a brute-force filter over every row."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargebox import ledger, queries, sale_search
from chargebox.schema import BLOCK_BITS
from tests.support import (
    credited_seller,
    database_of,
    postgresql_plan,
    rows_read,
    sqlite_plan,
    statements_read,
    writable,
)
from tests.test_statements import at

PHONES = ["09121234560", "09121234561", "09121234562"]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sales=st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 2), st.integers(0, 2), st.booleans()),
        max_size=30,
    ),
    low=st.none() | st.integers(-2, 14),
    high=st.none() | st.integers(-2, 14),
    who=st.sampled_from([None, 0, 1, 2]),
    phone=st.none() | st.integers(0, 2),
    key=st.none() | st.integers(0, 35),
    limit=st.integers(1, 5),
    blocks=st.integers(1, 3) | st.just(sale_search.BLOCKS),
    start_after=st.none() | st.integers(-3, 10**6) | st.integers(0, 80),
    jump=st.lists(st.integers(-3, 4), max_size=4),
    newest=st.booleans(),
)
def test_a_search_finds_exactly_what_its_filters_name_from_any_cursor(
    service, sales, low, high, who, phone, key, limit, blocks, start_after, jump, newest
):
    """Three sellers, three numbers, keyed and unkeyed sales, stamps in any order against
    ids: a search by any mix of seller, number, key and time (from, to, both, empty or
    reversed), from any cursor (past the last sale too), oldest first or newest first,
    page by page, however many blocks of ids it reads at a time, finds exactly the sales a
    filter over every row finds. (A reviewer's test of sale_search.)"""
    sellers = [credited_seller(service, 10**6, n)["id"] for n in "ABC"]
    tag = str(sellers[0])

    def work(write):
        for n, (seconds, s, p, keyed) in enumerate(sales):
            sale = ledger.sell(write, sellers[s], PHONES[p], 1, at(seconds))
            if keyed:
                write.execute(
                    "INSERT INTO idempotency_record (seller_id, key, request_hash,"
                    " created_at, sale_id) VALUES (?, ?, ?, ?, ?)",
                    (sellers[s], f"k{tag}-{n}", "0" * 64, at(seconds), sale["id"]),
                )

    service.database.write(work)
    seller = None if who is None else sellers[who]
    if key is not None and seller is None:
        seller = sellers[0]  # the service refuses a key without a seller
    search = queries.Search(
        phone=None if phone is None else PHONES[phone],
        key=None if key is None else f"k{tag}-{key}",
        start=None if low is None else at(low),
        end=None if high is None else at(high),
    )
    every = service.queries.reader.rows(
        "SELECT s.id, s.seller_id, s.phone, s.created_at, r.key FROM sale s"
        " LEFT JOIN idempotency_record r ON r.sale_id = s.id ORDER BY s.id"
    )
    matching = [
        i
        for i, owner, ph, stamp, k in every
        if seller in (None, owner)
        and search.phone in (None, ph)
        and (search.key is None or (k == search.key and owner == seller))
        and (search.start is None or stamp >= search.start)
        and (search.end is None or stamp < search.end)
    ]

    def page_of(cursor: int | None) -> queries.Page:
        if newest:  # None: from the newest
            return queries.Page(limit, before_id=cursor, newest_first=True)
        return queries.Page(limit, cursor or 0)

    def next_ones(cursor: int | None) -> list[int]:
        if newest:
            return [i for i in reversed(matching) if cursor is None or i < cursor][:limit]
        return [i for i in matching if i > (cursor or 0)][:limit]

    after = start_after if newest or start_after is not None else 0
    default, sale_search.BLOCKS = sale_search.BLOCKS, blocks
    try:
        # a few pages from arbitrary cursors first: each must be exactly the next matching ids
        for j in jump:
            cursor = None if after is None else max(0, after + j)
            got = [s["id"] for s in service.queries.sales(page_of(cursor), seller, search)]
            assert got == next_ones(cursor), (cursor, got)
            after = cursor
        while page := service.queries.sales(page_of(after), seller, search):
            assert len(page) <= limit
            got = [s["id"] for s in page]
            assert got == next_ones(after), (after, got)
            after = got[-1]
    finally:
        sale_search.BLOCKS = default
    assert not next_ones(after), after


def test_a_search_by_phone_reads_that_numbers_sales_not_every_sale(service, config):
    """A search of sales by number finds its page along an index of sales by number: 3,000
    sales to one number, then 5 to another; the second number's search, everyone's and
    the seller's, reads under 100 rows a statement on PostgreSQL (schema version 6's
    `sale_phone_id`: before it each walked every sale, 3,005 rows), and goes along
    `sale_phone` on SQLite."""
    seller = credited_seller(service, 10**9, "Busy")["id"]

    def work(write):
        for n in range(3000):
            ledger.sell(write, seller, PHONES[0], 1, at(n))
        for n in range(5):
            ledger.sell(write, seller, PHONES[1], 2, at(4000 + n))

    service.database.write(work)
    search = queries.Search(phone=PHONES[1])

    def search_pages():
        for whose in (None, seller):
            page = service.queries.sales(queries.Page(100), whose, search)
            assert [sale["amount"] for sale in page] == [2] * 5

    ran = statements_read(service, search_pages)
    reader = service.queries.reader
    if config.db_url:
        with writable(database_of(config)) as conn:
            conn.execute("ANALYZE sale")
        read = [rows_read(postgresql_plan(reader, sql, params)) for sql, params in ran]
        assert max(read) < 100, (read, ran)
        return
    for sql, params in ran:
        plan = sqlite_plan(reader, sql, params)
        assert "sale_phone (phone=?" in plan, plan


def test_newest_first_reads_the_blocks_downwards(service):
    """A seller's sales over three blocks of ids (2,600), a time range across all three,
    newest first, a block read at a time: each page is the next 100 below the last, down
    to the range's start (read upwards, a page would begin at the range's oldest block)."""
    seller = credited_seller(service, 10**9, "Busy")["id"]

    def work(write):
        for n in range(2600):
            ledger.sell(write, seller, PHONES[n % 2], 1, at(n))

    service.database.write(work)
    search = queries.Search(start=at(300), end=at(2500))
    every = [i for (i,) in service.queries.reader.rows("SELECT id FROM sale ORDER BY id")]
    default, sale_search.BLOCKS = sale_search.BLOCKS, 1
    try:
        found, before = [], None
        while page := service.queries.sales(
            queries.Page(100, before_id=before, newest_first=True), seller, search
        ):
            found += [sale["id"] for sale in page]
            before = found[-1]
    finally:
        sale_search.BLOCKS = default
    assert found == every[300:2500][::-1]


def test_newest_first_walks_each_run_of_blocks_between_its_bounds(service):
    """Newest first, each run of blocks is walked once, from its lowest block's first id
    up to the page's cursor: 3,000 sales, a range of 40 in the second block (fewer than a
    page) walks that block alone, not every sale below it; a page of a range over the
    second and third blocks that crosses from one to the other is one walk (a run read
    downwards is one run); and a later page's blocks are read from its cursor's block down,
    not from the newest again."""
    seller = credited_seller(service, 10**9, "Busy")["id"]

    def work(write):
        for n in range(3000):
            ledger.sell(write, seller, PHONES[0], 1, at(n))

    service.database.write(work)
    sold = [i for (i,) in service.queries.reader.rows("SELECT id FROM sale ORDER BY id")]
    few = queries.Search(start=at(1100), end=at(1140))
    wide = queries.Search(start=at(1500), end=at(2200))
    cursor = sold[2100]  # its page holds sales of the third block and of the second
    assert cursor >> BLOCK_BITS == 2 and sold[2000] >> BLOCK_BITS == 1

    def read(search: queries.Search, before: int | None) -> tuple[list[int], list, list]:
        page = queries.Page(100, before_id=before, newest_first=True)
        found = []
        ran = statements_read(
            service, lambda: found.extend(service.queries.sales(page, seller, search))
        )
        blocks = [params for sql, params in ran if "FROM sale_block" in sql]
        walks = [params[:2] for sql, params in ran if "FROM sale_block" not in sql]
        return [sale["id"] for sale in found], blocks, walks

    found, _, walks = read(few, None)
    assert found == sold[1100:1140][::-1]
    assert walks == [(1023, 2048)]  # its block only, none below it
    found, blocks, walks = read(wide, cursor)
    assert found == sold[2000:2100][::-1]
    assert walks == [(1023, cursor)]  # the second and third blocks: one run, one walk
    assert blocks[0][0] == (cursor - 1) >> BLOCK_BITS, blocks  # from the cursor's block down


def test_newest_first_from_any_cursor_over_blocks_and_stamps_out_of_order(service):
    """3,300 sales over four blocks of two sellers, stamps jittered and one in 97 anywhere:
    from cursors at the blocks' edges, a page newest first is the next matches below the
    cursor, the seller's and everyone's, a block or 64 read at a time; a whole walk down
    finds every match once. (After helper-106's review: the model above never leaves the
    first block.)"""
    rnd = random.Random(7)
    a, b = (credited_seller(service, 10**9, name)["id"] for name in "AB")

    def work(write):
        for n in range(3300):
            stamp = rnd.randint(0, 33000) if n % 97 == 0 else n * 10 + rnd.randint(-40, 40)
            ledger.sell(write, a if n % 3 else b, PHONES[n % 2], 1, at(stamp))

    service.database.write(work)
    every = service.queries.reader.rows(
        "SELECT id, seller_id, phone, created_at FROM sale ORDER BY id DESC"
    )
    top = every[0][0]
    cursors = [None, 1, 2, 1023, 1024, 1025, 2048, 2049, 3072, 3073, top, top + 1, 10**18]
    searches = [
        queries.Search(start=at(5000), end=at(25000)),
        queries.Search(start=at(10200), end=at(10300)),
        queries.Search(end=at(12000)),
        queries.Search(start=at(30000), end=at(1000)),  # reversed: none
        queries.Search(phone=PHONES[1], start=at(3000), end=at(31000)),
    ]
    default = sale_search.BLOCKS
    try:
        for blocks, whose in ((1, a), (sale_search.BLOCKS, a), (1, None)):
            sale_search.BLOCKS = blocks
            for search in searches:
                matching = [
                    i
                    for i, seller, phone, stamp in every
                    if whose in (None, seller)
                    and search.phone in (None, phone)
                    and (search.start is None or stamp >= search.start)
                    and (search.end is None or stamp < search.end)
                ]
                for cursor in cursors:
                    page = queries.Page(7, before_id=cursor, newest_first=True)
                    got = [s["id"] for s in service.queries.sales(page, whose, search)]
                    below = [i for i in matching if cursor is None or i < cursor]
                    assert got == below[:7], (blocks, whose, search, cursor)
                found, before = [], None
                while page := service.queries.sales(
                    queries.Page(101, before_id=before, newest_first=True), whose, search
                ):
                    found += [s["id"] for s in page]
                    before = found[-1]
                assert found == matching, (blocks, whose, search)
    finally:
        sale_search.BLOCKS = default
