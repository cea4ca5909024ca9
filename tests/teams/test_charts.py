"""The burn-down chart's numbers and the team pages' number words (no database, no Slurm)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from portal.quotas.charts import HEIGHT, WIDTH, DayUse, burn_down, factor_text, percent_text
from portal.quotas.usage import Usage

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def usage(used: float, budget: float | None, as_of: datetime) -> Usage:
    return Usage(team="t", period="month", start=START, end=END, as_of=as_of, gpu_hours=used, budget=budget)


def series(*totals: float) -> list[DayUse]:
    return [DayUse(day=date(2026, 11, i + 1), end=START + timedelta(days=i + 1), gpu_hours=t)
            for i, t in enumerate(totals)]


def points(text: str) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in text.split()]


def test_budget_left_starts_at_the_top_and_the_even_pace_ends_at_zero():
    chart = burn_down(usage(30, 100, START + timedelta(days=3)), series(10, 20, 30))
    assert points(chart.ideal) == [(0, 0), (WIDTH, HEIGHT)]
    line = points(chart.actual)
    assert line[0] == (0, 0) and line[-1] == (100.0, HEIGHT * 0.3)     # day 3 of 30, 70 of 100 left
    assert [(r.used, r.total, r.left) for r in chart.rows] == [(10, 10, 90), (10, 20, 80), (10, 30, 70)]
    assert chart.rows[0].ideal_left == 100 * (1 - 1 / 30)
    assert not chart.over and [t.label for t in chart.y_ticks] == ["100", "50.0", "0.0"]


def test_an_overspent_budget_goes_below_zero_and_says_so():
    chart = burn_down(usage(150, 100, START + timedelta(days=2)), series(100, 150))
    assert chart.over
    assert [t.label for t in chart.y_ticks] == ["100", "0.0", "-50.0"]
    assert chart.zero_y == HEIGHT * 100 / 150
    assert max(y for _, y in points(chart.actual)) == HEIGHT               # the lowest point is the floor


def test_without_a_budget_it_climbs_and_has_no_even_pace():
    chart = burn_down(usage(5, None, START + timedelta(days=1)), series(5))
    assert not chart.has_budget and chart.ideal == "" and chart.zero_y is None
    assert points(chart.actual)[-1][1] < points(chart.actual)[0][1]       # up the page
    assert chart.rows[0].left is None


def test_numbers_read_as_people_read_them():
    assert [factor_text(v) for v in (0.25, 1.0, 0.083333, 0.0041, 0.0, None)] == \
        ["0.25", "1.00", "0.083", "0.0041", "0.00", "\N{EN DASH}"]
    assert [percent_text(v) for v in (0.3298, 0.004, 0.0, 1.25)] == ["33%", "<1%", "0%", "125%"]
