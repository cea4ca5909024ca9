"""Template helpers shared by every page: times that name their zone, node names as links."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from portal.slurm.parse import expand_hostlist

register = template.Library()

# The server's rendering names its zone, so the page is right even before (or without)
# portal.js, which rewrites each <time> into the reader's own zone with the same style.
NONE = "\N{EN DASH}"
TIME_STYLES = {"seconds": "M j, H:i:s T", "minutes": "M j, H:i T", "day": "D j M, H:i T", "date": "M j, Y"}


@register.simple_tag
def when(value: datetime | None, style: str = "seconds", empty: str = NONE) -> SafeString | str:
    """`<time datetime="ISO" data-style="...">Nov 30, 12:03:04 UTC</time>`, or `empty` for no time."""
    if value is None:
        return empty
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    text = date_format(local, TIME_STYLES.get(style, TIME_STYLES["seconds"]))
    full = date_format(local, "Y-m-d H:i:s T")
    return format_html('<time datetime="{}" data-style="{}" title="{}">{}</time>',
                       value.isoformat(), style, full, text)


@register.filter
def node_links(hostlist: str | None, empty: str = NONE) -> SafeString | str:
    """Slurm's node list ("gpu[01-02]") as one link per node page."""
    names = expand_hostlist(hostlist or "")
    if not names:
        return empty
    return format_html_join(", ", '<a class="node-link" href="{}">{}</a>',
                            ((reverse("nodes:detail", args=[name]), name) for name in names))
