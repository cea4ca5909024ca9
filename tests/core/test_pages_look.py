"""What every page shares: readable colours, error pages that need nothing, zoned times, node links."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.template.loader import render_to_string

from portal.core.templatetags.portal_tags import node_links, when

CSS = Path(__file__).resolve().parents[2] / "portal/core/static/portal/portal.css"


def _luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _css() -> tuple[str, dict[str, str]]:
    text = CSS.read_text()
    root = re.search(r":root\s*\{([^}]*)\}", text).group(1)
    variables = dict(re.findall(r"--([\w-]+)\s*:\s*(#[0-9a-fA-F]{3,6})", root))
    return text, variables


def _colour(value: str, variables: dict[str, str]) -> str:
    match = re.fullmatch(r"var\(--([\w-]+)\)", value.strip())
    return variables[match.group(1)] if match else value.strip()


def _rules(text: str, selector_pattern: str) -> list[tuple[str, dict[str, str]]]:
    rules = []
    for selector, body in re.findall(r"(" + selector_pattern + r")\s*\{([^}]*)\}", text):
        props = dict((k.strip(), v.strip()) for k, v in re.findall(r"([\w-]+)\s*:\s*([^;]+)", body))
        rules.append((selector.strip(), props))
    return rules


def test_every_badge_colour_meets_wcag_aa_on_its_own_background():
    text, variables = _css()
    base = dict(_rules(text, r"\.badge(?=\s*\{)"))[".badge"]
    badges = _rules(text, r"\.badge\.\w+")
    coloured = [(sel, props) for sel, props in badges if "color" in props]
    assert len(coloured) >= 5, "expected ok, warn, bad, info and neutral badges"
    for selector, props in coloured:
        fg = _colour(props["color"], variables)
        bg = _colour(props.get("background", base["background"]), variables)
        assert contrast(fg, bg) >= 4.5, f"{selector}: {fg} on {bg} is {contrast(fg, bg):.2f}:1"


@pytest.mark.parametrize("name", ["ok", "warn", "bad", "info", "neutral", "muted", "accent", "ink"])
def test_text_colours_meet_wcag_aa_on_white_and_on_the_page(name):
    _, variables = _css()
    for background in ("#ffffff", variables["bg"]):
        assert contrast(variables[name], background) >= 4.5, f"--{name} on {background}"


@pytest.mark.parametrize(("page", "words"), [("404.html", "Not found"), ("403.html", "Not allowed"),
                                            ("500.html", "Something went wrong"), ("503.html", "unavailable")])
def test_error_pages_are_styled_and_500_503_need_no_database(page, words):
    # No request and no database (pytest-django refuses every query here): as Django renders a
    # 500, and as a 503 must render while PostgreSQL is down.
    html = render_to_string(page)
    assert words in html and re.search(r"portal\.(\w+\.)?css", html) and 'rel="icon"' in html


def test_a_time_names_its_zone_for_the_browser_to_localise():
    html = when(datetime(2026, 11, 30, 12, 3, 4, tzinfo=UTC))
    assert html == ('<time datetime="2026-11-30T12:03:04+00:00" data-style="seconds" '
                    'title="2026-11-30 12:03:04 UTC">Nov 30, 12:03:04 UTC</time>')
    assert when(None, empty="never") == "never"


def test_node_lists_become_links_to_each_node():
    assert node_links("gpu[01-02],cpu01") == (
        '<a class="node-link" href="/nodes/gpu01/">gpu01</a>, <a class="node-link" href="/nodes/gpu02/">gpu02</a>, '
        '<a class="node-link" href="/nodes/cpu01/">cpu01</a>')
    assert node_links("", "not placed yet") == "not placed yet"
