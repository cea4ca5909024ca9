"""Template helpers of the team pages."""

from __future__ import annotations

from django import template

from portal.quotas.charts import factor_text, percent_text

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    return percent_text(value)


@register.filter
def bar_width(value: float | None) -> str:
    """A 0..1 fraction as a CSS width, clamped so a bar never leaves its track."""
    return f"{min(max(value or 0.0, 0.0), 1.0) * 100:.1f}%"


@register.filter
def factor(value: float | None) -> str:
    return factor_text(value)
