"""Chart geometry for inline SVG, drawn on the server: no script needed to read a page.

Functions here turn counts and dates into coordinates; the templates draw them (autoescaped,
so a wave title or a department name is text, never markup).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    name: str  # css class and legend
    label: str
    count: int
    x: float
    width: float


@dataclass(frozen=True)
class Bar:
    """A stacked bar 0..100 wide (the SVG's viewBox), one segment per state."""

    title: str
    total: int
    segments: list[Segment]

    def count(self, name: str) -> int:
        return next((s.count for s in self.segments if s.name == name), 0)


def stacked(title: str, parts: list[tuple[str, str, int]]) -> Bar:
    total = sum(n for _, _, n in parts)
    x, segments = 0.0, []
    for name, label, n in parts:
        width = 100.0 * n / total if total else 0.0
        segments.append(Segment(name, label, n, round(x, 3), round(width, 3)))
        x += width
    return Bar(title, total, segments)


@dataclass(frozen=True)
class Span:
    key: str
    title: str
    opens: dt.date
    closes: dt.date
    launched: bool
    x: float
    width: float
    y: float


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass
class Timeline:
    """The waves' windows on one date axis, today marked (None when outside the axis)."""

    width: float
    height: float
    spans: list[Span] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    today_x: float | None = None
    today: str = ""


LEFT, ROW, TOP = 250.0, 26.0, 24.0


def timeline(
    waves: list[tuple[str, str, dt.date, dt.date, bool]], today: dt.date, width: float = 760.0
) -> Timeline:
    """waves: (key, title, opens, closes, launched). The axis runs from the first opening to
    the last close (and today, if outside), a week's margin each side."""
    start = min([w[2] for w in waves] + [today]) - dt.timedelta(days=7)
    end = max([w[3] for w in waves] + [today]) + dt.timedelta(days=7)
    days = max(1, (end - start).days)
    scale = (width - LEFT - 10) / days

    def x_of(day: dt.date) -> float:
        return round(LEFT + (day - start).days * scale, 2)

    chart = Timeline(width, TOP + ROW * len(waves) + 8)
    for i, (key, title, opens, closes, launched) in enumerate(waves):
        x = x_of(opens)
        # The window ends at local midnight after `closes`: the bar covers that whole day.
        w = max(2.0, x_of(closes + dt.timedelta(days=1)) - x)
        chart.spans.append(Span(key, title, opens, closes, launched, x, w, TOP + ROW * i))
    month = dt.date(start.year, start.month, 1)
    while month <= end:
        if month >= start:
            chart.ticks.append(Tick(x_of(month), month.strftime("%b %Y")))
        month = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    chart.today_x, chart.today = x_of(today), today.isoformat()
    return chart


@dataclass(frozen=True)
class Column:
    day: dt.date
    count: int
    x: float
    y: float
    height: float
    in_window: bool


@dataclass
class DailyChart:
    """Completions per day across the program's window, as columns; the window shaded."""

    width: float
    height: float
    columns: list[Column]
    peak: int
    window_x: float
    window_width: float
    today_x: float | None
    first: str
    last: str


def daily(
    counts: dict[dt.date, int],
    opens: dt.date,
    closes: dt.date,
    today: dt.date,
    bounds: tuple[dt.date, dt.date],
    width: float = 760.0,
    height: float = 160.0,
) -> DailyChart:
    """A column a day from the first completion (or the opening) to the last (or the close),
    never outside `bounds` (the program's reach), whatever is stored: a completion dated in
    year 1 once made every dashboard view draw 740,000 columns."""
    start = max(min([opens, *counts]) if counts else opens, bounds[0])
    end = min(max([closes, *counts]) if counts else closes, bounds[1])
    days = (end - start).days + 1
    step = (width - 40) / days
    peak = max(counts.values(), default=0)
    plot = height - 30
    columns = []
    for i in range(days):
        day = start + dt.timedelta(days=i)
        n = counts.get(day, 0)
        h = plot * n / peak if peak else 0.0
        columns.append(
            Column(
                day,
                n,
                round(30 + i * step, 2),
                round(10 + plot - h, 2),
                round(h, 2),
                opens <= day <= closes,
            )
        )
    window_x = 30 + (opens - start).days * step
    today_x = 30 + ((today - start).days + 0.5) * step if start <= today <= end else None
    return DailyChart(
        width,
        height,
        columns,
        peak,
        round(window_x, 2),
        round(((closes - opens).days + 1) * step, 2),
        round(today_x, 2) if today_x is not None else None,
        start.isoformat(),
        end.isoformat(),
    )
