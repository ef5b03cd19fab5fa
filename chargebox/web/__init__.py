"""The HTTP face of chargebox (bottle): JSON routes, HTML pages, error rendering, parsing.

Imports only modules above it in the README's map, never `db`, `models` or `ledger`:
it writes no SQL and computes no balance (tests/test_architecture.py).
"""

from chargebox.web.app import create_app

__all__ = ["create_app"]
