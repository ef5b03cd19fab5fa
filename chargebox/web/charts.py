"""Charts drawn on the server as inline SVG: bars over time, a line over time, a ranking.

Pure (no SQL, no bottle, no request): each function takes points (label, integer value),
the function that writes a value in the page's digits, the page's direction and its
words, and returns SVG markup. Every text is escaped (labels may be seller names) and
isolated so that a right-to-left name or an override stays inside its label: a seller's
name by FSI...PDI (a person's data, as on every page), our own words by LRI or RLI...PDI.
Each chart is an `<svg role="img">` whose `<title>` names it and whose `<desc>` holds every
figure, for a screen reader; it has a viewBox and no fixed size, so it scales to the page
(a phone's 390 px too), shows at most `TICKS` labels on its time axis and is coloured by
app.css classes (the Content-Security-Policy forbids style attributes). In a right-to-left
page time runs from right to left, as a Persian reader reads and as Persian spreadsheets
draw it: the first (oldest) point is on the right, the newest on the left. Each text
carries the direction of its own first strong letter (like dir=auto): Chromium misplaces
the digits of a Persian label drawn left to right when its space comes from another font.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import unicodedata
from collections.abc import Callable, Sequence

WIDTH, HEIGHT = 360, 200  # the viewBox: text of 13 units (app.css) stays readable on a phone
TICKS = 6  # labels on a time axis at most
TOP, BOTTOM, SIDE = 16, 24, 20  # margins: value label above, axis labels below, ends
LABEL_CHARS = 24  # a name longer than this is cut in a ranking's label (whole in <desc>)
# Characters XML 1.0 cannot hold at all: dropped from any text before it is escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")

Points = Sequence[tuple[str, int]]
Format = Callable[[int], str]


@dataclasses.dataclass(frozen=True)
class Words:
    """What a chart says, in the page's language: its title, and what it shows when
    there is nothing to draw."""

    title: str
    empty: str
    ident: str = "chart"  # the id of its <title>, unique on the page
    separator: str = "; "  # between the figures its <desc> lists ("؛ " in Persian)


def text(value: str, data: bool = False) -> str:
    """A text as XML character data or an attribute value, isolated from its neighbours:
    a person's (`data`: a seller's name) by FSI...PDI, as every page marks data; our own
    words and figures by LRI or RLI...PDI, the direction of their first strong letter (what
    FSI would pick), so that a check of a Persian page still reads them as ours."""
    value = _NOT_XML.sub("", value)
    opener = "\u2068" if data else ("\u2067" if _direction(value, "ltr") == "rtl" else "\u2066")
    return html.escape(opener + value + "\u2069", quote=True)


def _direction(content: str, otherwise: str) -> str:
    """The direction of a text's first strong letter (`otherwise` if it has none)."""
    for letter in content:
        strong = unicodedata.bidirectional(letter)
        if strong in ("L", "R", "AL"):
            return "ltr" if strong == "L" else "rtl"
    return otherwise


def bars(points: Points, fmt: Format, direction: str, words: Words,
         ticks: Sequence[str] | None = None) -> str:  # fmt: skip
    """Vertical bars over time, one per point, oldest first in `points`. The axis shows
    `ticks` if given (one per point, short, the caller's choice: an empty one is not
    drawn), else at most TICKS of the points' own labels, the newest among them."""
    if _empty(points):
        return _nothing(words)
    plot = _Plot(len(points), direction, [value for _, value in points])
    width = plot.step * 0.7
    parts = [plot.axis(fmt)]
    for index, (label, value) in enumerate(points):
        top, bottom = sorted((plot.y(value), plot.y(0)))
        x = plot.x(index) - width / 2
        parts.append(
            f'<rect class="chart-bar" x="{x:.1f}" y="{top:.1f}" width="{width:.1f}"'
            f' height="{max(bottom - top, 0.5):.1f}"><title>{text(label)}: {text(fmt(value))}'
            "</title></rect>"
        )
    if ticks and any(ticks):
        parts.append(plot.labels(list(ticks), [n for n, tick in enumerate(ticks) if tick]))
    else:
        parts.append(plot.labels([label for label, _ in points]))
    return _svg(words, points, fmt, "".join(parts))


def line(points: Points, fmt: Format, direction: str, words: Words) -> str:
    """A line through the points over time, oldest first in `points`, its last value said."""
    if _empty(points):
        return _nothing(words)
    plot = _Plot(len(points), direction, [value for _, value in points])
    where = [(plot.x(index), plot.y(value)) for index, (_, value) in enumerate(points)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in where)
    last_x, last_y = where[-1]
    parts = [
        plot.axis(fmt),
        f'<polyline class="chart-line" points="{path}"/>',
        f'<circle class="chart-dot" cx="{last_x:.1f}" cy="{last_y:.1f}" r="3"/>',
        plot.labels([label for label, _ in points]),
    ]
    return _svg(words, points, fmt, "".join(parts))


def ranking(points: Points, fmt: Format, direction: str, words: Words) -> str:
    """Horizontal bars, largest first as given: each name above its bar, its value beside."""
    if _empty(points):
        return _nothing(words)
    top = max(value for _, value in points) or 1
    row, height = 34, 34 * len(points) + 4
    # The values' gutter beside the longest bar: as wide as the widest value may be drawn
    # (digits, separators and the unit at most 0.62 em each), so no value leaves the
    # viewBox, whether 450,000,000 toman or near 10**15.
    gutter = 4 + 13 * 0.62 * max(len(fmt(value)) for _, value in points)
    near = "right" if direction == "rtl" else "left"  # the side names and values start from
    edge = WIDTH - SIDE if direction == "rtl" else SIDE
    parts = []
    for index, (label, value) in enumerate(points):
        y = index * row + 14
        length = max((WIDTH - 2 * SIDE - gutter) * max(value, 0) / top, 1)
        x = edge - length if direction == "rtl" else edge
        end = x - 4 if direction == "rtl" else x + length + 4
        shown = label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "\u2026"
        parts += [
            _text("chart-name", edge, y, near, shown, direction, data=True),
            f'<rect class="chart-bar" x="{x:.1f}" y="{y + 4}" width="{length:.1f}" height="12"/>',
            _text("chart-value", end, y + 14, near, fmt(value), direction),
        ]
    return _svg(words, points, fmt, "".join(parts), height, names=True)


class _Plot:
    """Where points go: x by index (mirrored right to left), y by value (0 always shown)."""

    def __init__(self, count: int, direction: str, values: list[int]) -> None:
        self.count, self.direction, self.rtl = count, direction, direction == "rtl"
        self.low, self.high = min(0, *values), max(0, *values)
        self.step = (WIDTH - 2 * SIDE) / count

    def x(self, index: int) -> float:
        middle = SIDE + self.step * (index + 0.5)
        return WIDTH - middle if self.rtl else middle

    def y(self, value: int) -> float:
        span = (self.high - self.low) or 1
        return TOP + (HEIGHT - TOP - BOTTOM) * (self.high - value) / span

    def axis(self, fmt: Format) -> str:
        """The zero line, and the highest value written above its gridline."""
        side, x = ("right", WIDTH - SIDE) if self.rtl else ("left", SIDE)
        zero, high = self.y(0), self.y(self.high)
        return (
            f'<line class="chart-axis" x1="{SIDE}" y1="{zero:.1f}" x2="{WIDTH - SIDE}"'
            f' y2="{zero:.1f}"/><line class="chart-grid" x1="{SIDE}" y1="{high:.1f}"'
            f' x2="{WIDTH - SIDE}" y2="{high:.1f}"/>'
            + _text("chart-value", x, high - 4, side, fmt(self.high), self.direction)
        )

    def labels(self, labels: list[str], chosen: Sequence[int] | None = None) -> str:
        """The labels `chosen` (indexes) under the axis; by default at most TICKS, the
        newest always among them."""
        if chosen is None:
            every = max(1, math.ceil(self.count / TICKS))
            chosen = range(self.count - 1, -1, -every)
        return "".join(
            _text("chart-label", self.x(index), HEIGHT - 6, "middle", labels[index], self.direction)
            for index in sorted(chosen)
        )


def _text(kind: str, x: float, y: float, side: str, content: str, direction: str,
          data: bool = False) -> str:  # fmt: skip
    """A <text> whose `side` (left, right, middle) is at x, in its own direction."""
    own = _direction(content, direction)
    anchor = {"middle": "middle", "left": "start", "right": "end"}[side]
    if own == "rtl" and side != "middle":
        anchor = "end" if side == "left" else "start"
    return (
        f'<text class="{kind}" x="{x:.1f}" y="{y:.1f}" direction="{own}" text-anchor="{anchor}">'
        f"{text(content, data)}</text>"
    )


def _empty(points: Points) -> bool:
    return not points or all(value == 0 for _, value in points)


def _svg(words: Words, points: Points, fmt: Format, body: str, height: int = HEIGHT,
         names: bool = False) -> str:  # fmt: skip
    """The chart's <svg>; `names`: its labels are sellers' names (data), not our words."""
    figures = words.separator.join(
        f"{text(label, names)}: {text(fmt(value))}" for label, value in points
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}"'
        f' width="100%" role="img"'
        f' aria-labelledby="{words.ident}-title {words.ident}-desc">'
        f'<title id="{words.ident}-title">{text(words.title)}</title>'
        f'<desc id="{words.ident}-desc">{figures}</desc>{body}</svg>'
    )


def _nothing(words: Words) -> str:
    """The chart of no data: its title, and the words saying so, in place of a drawing."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-empty"'
        f' viewBox="0 0 {WIDTH} 60" width="100%" role="img"'
        f' aria-labelledby="{words.ident}-title {words.ident}-desc">'
        f'<title id="{words.ident}-title">{text(words.title)}</title>'
        f'<desc id="{words.ident}-desc">{text(words.empty)}</desc>'
        + _text("chart-label", WIDTH / 2, 34, "middle", words.empty, "ltr")
        + "</svg>"
    )
