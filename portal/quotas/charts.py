"""The team page's burn-down chart as plain numbers for a server-rendered SVG.

The SVG draws only lines in a fixed 1000 x 300 box stretched to the card's width (strokes do
not scale); axis labels are HTML placed by percentage, so they stay readable on a phone where
text inside a stretched SVG would shrink or distort. No script is needed to draw it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from portal.quotas.usage import Usage, site_zone

WIDTH, HEIGHT = 1000, 300


@dataclass(frozen=True)
class DayUse:
    """A point of the chart: the period's GPU-hours so far at the end of a local day."""

    day: date
    end: datetime           # the end of that day, or as_of for today
    gpu_hours: float        # cumulative from the period's start to `end`


def day_points(usage: Usage) -> list[DayUse]:
    """usage.by_day as chart points, each placed at the end of its day (midnights made from
    dates, so a daylight-saving day is 23 or 25 hours wide)."""
    zone = site_zone()
    return [DayUse(day=d.day, end=min(datetime.combine(d.day + timedelta(days=1), time(), tzinfo=zone), usage.as_of),
                   gpu_hours=d.cumulative) for d in usage.by_day]


@dataclass(frozen=True)
class Tick:
    label: str
    pct: float              # from the top (y) or from the left (x), 0..100


@dataclass(frozen=True)
class DayRow:
    """One line of the chart's table: the same figures as text."""

    day: date
    used: float             # GPU-hours that day
    total: float            # cumulative
    left: float | None      # budget left at the end of the day
    ideal_left: float | None


@dataclass
class BurnDown:
    has_budget: bool
    actual: str             # SVG polyline points
    ideal: str = ""
    zero_y: float | None = None
    now_x: float = 0.0
    over: bool = False
    y_ticks: list[Tick] = field(default_factory=list)
    rows: list[DayRow] = field(default_factory=list)


def hours_text(value: float) -> str:
    """GPU-hours as people read them: 1,234 / 56.7 / 0.25."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1 or value == 0:
        return f"{value:.1f}"
    return f"{value:.2f}"


def percent_text(value: float | None) -> str:
    """A 0..1 fraction as people read it: "33%", or "<1%" for a sliver that is not nothing."""
    if value is None:
        return "\N{EN DASH}"
    if 0 < value < 0.01:
        return "<1%"
    return f"{value:.0%}"


def factor_text(value: float | None) -> str:
    """A 0..1 fair-share factor: two decimals, but a small one keeps two significant digits
    (0.0041, not 0.00, which would read as "no priority at all")."""
    if value is None:
        return "\N{EN DASH}"
    if 0 < value < 0.1:
        return f"{value:.2g}"
    return f"{value:.2f}"


def _x(moment: datetime, usage: Usage) -> float:
    span = (usage.end - usage.start).total_seconds()
    return round(WIDTH * max(0.0, min(1.0, (moment - usage.start).total_seconds() / span)), 1)


def _scale(low: float, high: float) -> Callable[[float], float]:
    high = high if high > low else low + 1
    return lambda value: round(HEIGHT * (high - value) / (high - low), 1)


def _points(pairs: list[tuple[float, float]]) -> str:
    return " ".join(f"{x},{y}" for x, y in pairs)


def _ticks(low: float, high: float, y: Callable[[float], float]) -> list[Tick]:
    values = {high, low, 0.0} if low < 0 else {high, (high + low) / 2, low}
    return [Tick(hours_text(v), round(100 * y(v) / HEIGHT, 1)) for v in sorted(values, reverse=True)]


def _rows(usage: Usage, series: list[DayUse]) -> list[DayRow]:
    rows, before, span = [], 0.0, (usage.end - usage.start).total_seconds()
    for point in series:
        ideal = None
        if usage.budget is not None:
            ideal = usage.budget * (1 - (point.end - usage.start).total_seconds() / span)
        left = None if usage.budget is None else usage.budget - point.gpu_hours
        rows.append(DayRow(point.day, point.gpu_hours - before, point.gpu_hours, left, ideal))
        before = point.gpu_hours
    return rows


def burn_down(usage: Usage, series: list[DayUse]) -> BurnDown:
    """Budget left across the period with the even-pace line; without a budget, use so far."""
    budget = usage.budget
    values = [(usage.start, 0.0)] + [(p.end, p.gpu_hours) for p in series]
    if budget is not None:
        values = [(moment, budget - used) for moment, used in values]
        low, high = min(0.0, *(v for _, v in values)), max(budget, 0.0)
    else:
        low, high = 0.0, max(1.0, *(v for _, v in values)) * 1.1
    y = _scale(low, high)
    chart = BurnDown(has_budget=budget is not None, actual=_points([(_x(m, usage), y(v)) for m, v in values]),
                     now_x=_x(usage.as_of, usage), y_ticks=_ticks(low, high, y), rows=_rows(usage, series))
    if budget is not None:
        chart.ideal = _points([(0, y(budget)), (WIDTH, y(0.0))])
        chart.zero_y = y(0.0)
        chart.over = values[-1][1] < 0
    return chart
