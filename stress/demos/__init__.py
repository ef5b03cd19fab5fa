"""The threads-vs-processes lessons, one module each: `python -m stress demo NAME`.

Every demo module defines `NAME`, `SUMMARY` (one line for --help) and
`run(quick: bool = False) -> dict` returning
`{"demo": NAME, "rows": [...], "lesson": "one sentence", "effect_shown": bool, ...}`:
`rows` print as a table, `lesson` says what the numbers mean, and `effect_shown`
tells whether this run really showed the mechanism the demo claims (the tests
check it), judged by what a busy box cannot fake or hide (CPU time per wall
second, calls in flight, errors and lost money, where writers waited), never by
a speed-up. A demo whose figures a busy box flattened adds a `warning` instead.
`quick=True` is the short mode for CI: seconds, not a minute.
"""

from __future__ import annotations

import importlib

DEMOS = ("gil", "io", "shared-connection", "lost-update", "file-lock")


def load(name: str):
    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose from {', '.join(DEMOS)}")
    return importlib.import_module(f"stress.demos.{name.replace('-', '_')}")
