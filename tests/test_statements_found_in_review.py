"""Statements and the sale search: defects found in the review of issue 15, each shown
over HTTP on a real server (both backends) and fixed."""

from __future__ import annotations

import pytest

from chargebox import periods
from chargebox.errors import ValidationError


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-12-01T00:00:00Z", "to": "9999-12-31T23:59:59.999999Z"},
        {"from": "9999-12-31T21:00:00Z", "to": "9999-12-31T22:00:00-00:30"},
    ],
)
def test_a_period_whose_ends_tehran_cannot_show_is_a_422_not_a_500(make_seller, params):
    """UTC can store 9999-12-31T23:59Z, but in Asia/Tehran it is the year 10000: the
    statement's from/to (shown in Tehran time) overflowed after the period was accepted."""
    _, seller = make_seller()
    got = seller.get("/api/statements", params=params)
    assert got.status_code == 422, got.text
    assert got.json()["error"]["code"] == "validation_error"
    with pytest.raises(ValidationError):
        periods.period(params)


@pytest.mark.parametrize("accept", ["text/csv;q=0.00", "text/csv; q=0.000", "text/csv;Q=0."])
def test_text_csv_with_a_zero_quality_is_not_asked_for(make_seller, accept):
    """RFC 9110: q=0, 0., 0.0, 0.00 and 0.000 all mean 'not acceptable'."""
    _, seller = make_seller()
    got = seller.get("/api/statements?day=2026-12-01", headers={"Accept": accept})
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"].startswith("application/json"), accept
