"""/metrics: node health (portal/nodes/metrics.py) and reliability (portal/recovery/reliability.py).

Composed here, outside both apps, so neither has to import the other. Access rules are the
node metrics' (a bearer token or an allowed address). The reliability figures come from a
short cache (PORTAL_RELIABILITY_CACHE_SECONDS): a scrape every few seconds costs a cache read.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from portal.nodes import metrics as node_metrics
from portal.recovery import reliability

family = node_metrics._family


def _per_team(teams: dict, field: str, digits: int = 6):
    return (({"team": key}, round(f[field], digits)) for key, f in sorted(teams.items())
            if key != reliability.CLUSTER and f[field] is not None)


def _cluster(teams: dict, field: str):
    value = teams[reliability.CLUSTER][field]
    return [] if value is None else [({}, round(value, 6))]


def _ratio_families(data: dict) -> list[str]:
    teams = data["teams"]
    window = f"the runs (goodput) or jobs (ETTR) that ended in the last {data['window_days']} days"
    goodput = "Useful GPU-hours / allocated GPU-hours (useful: allocated minus work lost to failures)"
    ettr = "Productive runtime / wall-clock from submit to end, time spent requeued included"
    return [
        *family("portal_goodput_ratio", "gauge", f"{goodput}, by team, over {window}.", _per_team(teams, "goodput")),
        *family("portal_cluster_goodput_ratio", "gauge", f"{goodput}, whole cluster, over {window}.",
                _cluster(teams, "goodput")),
        *family("portal_ettr_ratio", "gauge", f"{ettr}, by team, over {window}.", _per_team(teams, "ettr")),
        *family("portal_cluster_ettr_ratio", "gauge", f"{ettr}, whole cluster, over {window}.",
                _cluster(teams, "ettr")),
    ]


def _counter_families(data: dict) -> list[str]:
    lost = data["lost_gpu_s"]
    return [
        *family("portal_auto_requeues_total", "counter", "Jobs requeued automatically by the portal, by cause.",
                (({"cause": cause}, n) for cause, n in sorted(data["requeues"].items()))),
        *family("portal_lost_gpu_seconds_total", "counter",
                "GPU-seconds of work lost to failed runs (time since their last checkpoint x GPUs), by team.",
                (({"team": team}, round(s, 3)) for team, s in sorted(lost.items()))),
    ]


def render() -> str:
    data = reliability.cached_for_metrics()
    return node_metrics.render() + "\n".join([*_ratio_families(data), *_counter_families(data)]) + "\n"


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    return node_metrics.refusal(request) or HttpResponse(render(), content_type=node_metrics.CONTENT_TYPE)
