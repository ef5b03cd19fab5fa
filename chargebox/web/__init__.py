"""The HTTP face of chargebox (bottle): JSON routes, HTML pages, error rendering, parsing.

Depends on `services`, `auth` and `errors`; never writes SQL or computes a balance.
"""

from chargebox.web.app import create_app

__all__ = ["create_app"]
