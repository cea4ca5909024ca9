"""/metrics: node health in Prometheus' text exposition format (version 0.0.4).

Written by hand (no client library): a few gauges and counters read from the database at
scrape time, never from Slurm, so a scrape costs a handful of small queries. Counters are
totals over the stored rows (findings, node actions), which only grow.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from portal.core import liveness
from portal.nodes.models import Finding, Node, NodeAction
from portal.nodes.services import AUTO_PREFIX

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
    findings = Finding.objects.values("check_name", "severity").annotate(n=Count("id")).order_by()
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


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(render(), content_type=CONTENT_TYPE)
