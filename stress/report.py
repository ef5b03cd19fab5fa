"""Turning measurements into what a person reads: tables, percentiles, JSON files, charts.

Pure formatting and arithmetic; nothing here talks to a server. matplotlib is
optional (`pip install -e .[plot]`) and imported only when a chart is asked for.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def latency_summary(seconds: Sequence[float]) -> dict:
    ordered = sorted(seconds)
    return {
        f"p{int(q * 100)}_ms": round(percentile(ordered, q) * 1000, 2) for q in (0.50, 0.95, 0.99)
    } | {"max_ms": round((ordered[-1] if ordered else 0) * 1000, 2)}


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain text table; numbers right-aligned, with thousands separators for ints."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(value: object) -> str:
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.2f}"
        return str(value)

    cells = [[cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)
    ]
    numeric = [all(isinstance(row.get(c), int | float) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *(line(values) for values in cells)])


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def plot_rounds(rounds: Sequence[dict], path: Path) -> Path:
    """Throughput and p99 latency against workers, one line per mode (threads, processes)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    levels = sorted({row["workers"] for row in rounds})
    for mode in sorted({row["mode"] for row in rounds}):
        mine = sorted((row for row in rounds if row["mode"] == mode), key=lambda r: r["workers"])
        workers = [row["workers"] for row in mine]
        left.plot(workers, [row["sales_per_s"] for row in mine], marker="o", label=mode)
        right.plot(workers, [row["p99_ms"] for row in mine], marker="o", label=mode)
    for axis, title, unit in ((left, "throughput", "sales/s"), (right, "p99 latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.set_xlabel("concurrent workers (keep-alive connections)")
        axis.set_ylabel(unit)
        axis.set_title(f"chargebox POST /api/sales: {title}")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
