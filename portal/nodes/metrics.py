"""/metrics: node health in Prometheus' text exposition format (version 0.0.4).

Written by hand (no client library): a few gauges and counters read from the database at
scrape time, never from Slurm. A scrape costs a handful of queries over rows per node (Node,
FindingCount), never over the findings table, which grows by hundreds of thousands of rows a
day and is pruned: the findings counter is kept at intake (add_finding_counts), so pruning
never lowers it. Node actions are few (drains, alerts) and counted as stored.

Access: a bearer token (PORTAL_METRICS_TOKEN or PORTAL_METRICS_TOKEN_FILE) or a client address
in PORTAL_METRICS_ALLOW (default: this host only). Node names, states and findings are no
business of the internet.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from portal.infra import liveness
from portal.nodes.models import FindingCount, Node, NodeAction
from portal.nodes.services import AUTO_PREFIX

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    number = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {number}" if inner else f"{name} {number}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [_sample(name, labels, value) for labels, value in samples]


def _node_families(nodes: list[Node]) -> list[str]:
    now = timezone.now()
    return [
        *_family("portal_node_state", "gauge", "1 for the node's Slurm base state (IDLE, MIXED, DOWN, ...).",
                 (({"node": n.name, "state": n.state or "UNKNOWN"}, 1) for n in nodes)),
        *_family("portal_node_flag", "gauge", "1 for each Slurm state flag the node has (DRAIN, NOT_RESPONDING, ...).",
                 (({"node": n.name, "flag": flag}, 1) for n in nodes for flag in n.flags)),
        *_family("portal_node_drained", "gauge",
                 "1 when the node is drained; by=portal for automatic (portal:) drains, by=admin otherwise.",
                 (({"node": n.name, "by": "portal" if n.reason.startswith(AUTO_PREFIX) else "admin"},
                   int("DRAIN" in n.flags)) for n in nodes)),
        *_family("portal_node_health_ok", "gauge", "1 when the node's newest health report was clean.",
                 (({"node": n.name}, int(bool(n.last_health_ok))) for n in nodes if n.last_health_at)),
        *_family("portal_node_health_report_age_seconds", "gauge", "Seconds since the node's newest health report.",
                 (({"node": n.name}, round((now - n.last_health_at).total_seconds(), 3))
                  for n in nodes if n.last_health_at)),
    ]


def _count_families() -> list[str]:
    findings = FindingCount.objects.values("check_name", "severity").annotate(n=Sum("total")).order_by()
    actions = NodeAction.objects.values("kind", "automatic").annotate(n=Count("id")).order_by()
    return [
        *_family("portal_health_findings_total", "counter", "Findings in stored health reports, by check and severity.",
                 (({"check": f["check_name"], "severity": f["severity"]}, f["n"]) for f in findings)),
        *_family("portal_node_actions_total", "counter",
                 "Drains, resumes, alerts and outages recorded; automatic=true for the health policy's own.",
                 (({"kind": a["kind"], "automatic": str(a["automatic"]).lower()}, a["n"]) for a in actions)),
    ]


def render() -> str:
    nodes = list(Node.objects.order_by("name").only("name", "state", "flags", "reason", "last_health_at",
                                                    "last_health_ok"))
    return "\n".join([*_node_families(nodes), *_count_families(), *liveness.metric_lines()]) + "\n"


# ---------------------------------------------------------------- counters kept at intake

_ADD_COUNTS_SQL = f"""
INSERT INTO {FindingCount._meta.db_table} (node_id, check_name, severity, total) VALUES (%s, %s, %s, %s)
ON CONFLICT (node_id, check_name, severity) DO UPDATE SET total = {FindingCount._meta.db_table}.total + EXCLUDED.total
"""  # noqa: S608 - the table name comes from the model; every value is a parameter


def add_finding_counts(node_id: int, findings: Iterable[tuple[str, str]]) -> None:
    """Add one stored report's findings ((check, severity) pairs) to the node's running totals.
    Rows in a fixed order, so two reports of one node counted at once never deadlock."""
    counts = Counter(findings)
    if counts:
        with connection.cursor() as cursor:
            cursor.executemany(_ADD_COUNTS_SQL, [(node_id, check, severity, n)
                                                 for (check, severity), n in sorted(counts.items())])


# ---------------------------------------------------------------- access

def _token() -> str:
    """Read at each scrape, so a rotated token file takes effect without a restart."""
    path = settings.PORTAL_METRICS_TOKEN_FILE
    if not path:
        return settings.PORTAL_METRICS_TOKEN
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        # Fail closed: with no readable token only the allow-list still gets in.
        log.error("/metrics token file %s unreadable: %s", path, exc.strerror)
        return "\0unreadable"


def _allowed_address(remote: str) -> bool:
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in network for network in settings.PORTAL_METRICS_ALLOW)


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the scraper may read; otherwise 401 (token missing or wrong) or 403."""
    token, given = _token(), request.headers.get("Authorization", "")
    if token and given:
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
    elif _allowed_address(request.META.get("REMOTE_ADDR", "")):
        return None
    if token:
        response = HttpResponse("Send Authorization: Bearer <PORTAL_METRICS_TOKEN>.\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse("This address may not read /metrics (PORTAL_METRICS_ALLOW).\n", status=403,
                        content_type="text/plain")


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return refusal(request) or HttpResponse(render(), content_type=CONTENT_TYPE)
