"""Node pages: every node's state, GPUs and health at a glance, one node's history, drain and resume.

Everyone signed in may look (researchers want to know why their job waits); only admins drain
and resume. Like the job pages, each live area is a named partial (templates/nodes/_*.html)
that both the full page and its htmx polling endpoint render.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.infra import errors
from portal.jobs import access, states
from portal.jobs.models import Job
from portal.nodes import queries, services
from portal.nodes.models import Node, NodeAction
from portal.nodes.states import OUT_OF_SERVICE, STATE_ORDER, WORD_BADGE, state_word
from portal.slurm.errors import SlurmError
from portal.slurm.types import NodeInfo, gpu_count

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def slurm_error_text(exc: SlurmError) -> str:
    """The words for a gateway error: portal/infra/errors.py holds them for the API and pages."""
    return errors.slurm_error_text(exc, "this node")


# ---------------------------------------------------------------- presentation helpers

def short_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def health_summary(node: Node, problems: int, now: datetime) -> tuple[str, str]:
    """("ok 3 s ago" | "2 findings 40 s ago" | "no report for 5 min", css class)."""
    if node.last_health_at is None:
        return "no report yet", "muted"
    age = (now - node.last_health_at).total_seconds()
    # The policy's threshold: the page calls a node silent exactly when the policy alerts on it.
    if age > settings.PORTAL_HEALTH_STALE_AFTER_S:
        return f"no report for {short_age(age)}", "warn"
    if node.last_health_ok is not False:
        return f"ok {short_age(age)} ago", "ok"
    count = problems or 1  # an unclean report has at least one problem, even if its rows were pruned
    return f"{count} finding{'s' if count != 1 else ''} {short_age(age)} ago", "bad"


@dataclass(frozen=True)
class NodeRow:
    """A node with what its row, summary and header show."""

    node: Node
    state: str
    reason: str
    word: str
    badge: str
    gpus: int
    gpus_used: int
    cpus_used: int
    jobs: int
    health: str
    health_class: str
    attention: bool

    @property
    def gpu_pct(self) -> int:
        return round(100 * self.gpus_used / self.gpus) if self.gpus else 0

    @property
    def in_service(self) -> bool:
        return self.word not in OUT_OF_SERVICE


def present(node: Node, *, live: NodeInfo | None, load: queries.NodeLoad, problems: int, now: datetime) -> NodeRow:
    # Slurm's live answer when there is one: the table is synced only every 15 s.
    state, flags, reason = (live.state, live.flags, live.reason) if live else (node.state, node.flags, node.reason)
    word, colour = state_word(state, flags)
    used = gpu_count(live.gres_used) if live else load.gpus
    health, health_class = health_summary(node, problems, now)
    attention = word in OUT_OF_SERVICE or node.last_health_ok is False
    cpus_used = live.alloc_cpus if live else node.alloc_cpus
    return NodeRow(node=node, state="+".join([state, *flags]), reason=reason, word=word, badge=colour,
                   gpus=node.gpus, gpus_used=min(used, node.gpus), cpus_used=cpus_used,
                   jobs=load.jobs, health=health, health_class=health_class, attention=attention)


def present_all(nodes: list[Node], now: datetime) -> tuple[list[NodeRow], bool]:
    """Rows for the nodes, and whether Slurm answered (False: states are from the last sync)."""
    live = queries.live_nodes()
    load = queries.running_load_by_node()
    problems = queries.last_report_problems(nodes)
    rows = [present(n, live=(live or {}).get(n.name), load=load.get(n.name, queries.NodeLoad()),
                    problems=problems.get(n.pk, 0), now=now) for n in nodes]
    return rows, live is not None


def memory_text(mb: int) -> str:
    return f"{mb / 1024:.0f} GB memory" if mb >= 1024 else f"{mb} MB memory"


def _node_or_404(name: str) -> Node:
    if not NAME_RE.match(name):
        raise Http404
    try:
        return Node.objects.get(name=name)
    except Node.DoesNotExist:
        raise Http404 from None


# ---------------------------------------------------------------- node list

class NodeFilterForm(forms.Form):
    partition = forms.ChoiceField(required=False)
    state = forms.ChoiceField(choices=[("", "Any state"), *((w, w.capitalize()) for w in STATE_ORDER)],
                              required=False)
    attention = forms.BooleanField(required=False, label="Needs attention")

    def __init__(self, *args, partitions: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["partition"].choices = [("", "All partitions"), *((p, p) for p in partitions)]

    def keep(self, row: NodeRow) -> bool:
        data = self.cleaned_data
        return ((not data["partition"] or data["partition"] in row.node.partitions)
                and (not data["state"] or data["state"] == row.word)
                and (not data["attention"] or row.attention))


def _summary(rows: list[NodeRow]) -> dict:
    words = Counter(row.word for row in rows)
    return {"nodes": len(rows), "attention": sum(row.attention for row in rows),
            "gpus": sum(row.gpus for row in rows), "gpus_used": sum(row.gpus_used for row in rows),
            "states": [(w, words[w], WORD_BADGE[w]) for w in STATE_ORDER if words[w]]}


def _list_context(request: HttpRequest) -> dict:
    nodes = list(Node.objects.all())
    partitions = sorted({p for node in nodes for p in node.partitions})
    form = NodeFilterForm(request.GET, partitions=partitions)
    rows, live = present_all(nodes, timezone.now())
    shown = [row for row in rows if form.keep(row)] if form.is_valid() else rows
    return {"form": form, "rows": shown, "summary": _summary(rows), "is_admin": access.is_admin(request.user),
            "filtered": any(request.GET.get(k) for k in ("partition", "state", "attention")),
            "live": live,
            "rows_url": f"{reverse('nodes:rows')}?{request.GET.urlencode()}"}


@login_required
@require_GET
def node_list(request: HttpRequest) -> HttpResponse:
    context = _list_context(request)
    return render(request, "nodes/list.html", context, status=400 if context["form"].errors else 200)


@login_required
@require_GET
def node_list_rows(request: HttpRequest) -> HttpResponse:
    """The list's live area alone; htmx polls it every 3 s."""
    return render(request, "nodes/_node_rows.html", _list_context(request))


# ---------------------------------------------------------------- node detail

@dataclass(frozen=True)
class JobLine:
    job: Job
    visible: bool
    state_label: str
    badge: str


def chart_columns(bars: list[queries.HourBar]) -> list[dict]:
    """Each hour as stacked percentages of the busiest hour, for the CSS bar chart."""
    peak = max((bar.total for bar in bars), default=0) or 1
    return [{"bar": bar, "label": bar.start, "tick": i % 6 == 0,
             "fatal": round(100 * bar.fatal / peak), "warning": round(100 * bar.warning / peak),
             "info": round(100 * bar.info / peak)} for i, bar in enumerate(bars)]


def _job_lines(request: HttpRequest, node: Node, now: datetime) -> list[JobLine]:
    jobs = queries.recent_jobs_on(node, now)
    visible = set(access.visible_jobs(request.user).filter(pk__in=[j.pk for j in jobs]).values_list("pk", flat=True))
    return [JobLine(job=j, visible=j.pk in visible, state_label=states.label(j.state, j.reason),
                    badge=states.badge(j.state))
            for j in jobs]


def _detail_context(request: HttpRequest, node: Node) -> dict:
    now = timezone.now()
    rows, live = present_all([node], now)
    bars = queries.findings_per_hour(node, now)
    return {"node": node, "row": rows[0], "live": live, "now": now, "chart": chart_columns(bars),
            "chart_total": sum(bar.total for bar in bars),
            "findings": list(node.health_findings.order_by("-sent_at", "id")[:50]),
            "actions": list(NodeAction.objects.filter(node=node).select_related("actor")[:30]),
            "jobs": _job_lines(request, node, now), "is_admin": access.is_admin(request.user),
            "memory": memory_text(node.real_memory_mb)}


@login_required
@require_GET
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    node = _node_or_404(name)
    return render(request, "nodes/detail.html", {**_detail_context(request, node), "form": NodeActionForm()})


@login_required
@require_GET
def node_status(request: HttpRequest, name: str) -> HttpResponse:
    """The detail page's live area alone; htmx polls it every 3 s."""
    node = _node_or_404(name)
    return render(request, "nodes/_status.html", _detail_context(request, node))


# ---------------------------------------------------------------- drain and resume

class NodeActionForm(forms.Form):
    reason = forms.CharField(max_length=250, error_messages={
        "required": "Give a reason: it is kept in Slurm and in the node's history."})
    # Where the admin came from: the list's row controls send them back to the list.
    back = forms.ChoiceField(choices=[("detail", "detail"), ("list", "list")], required=False)


ACTION_DONE = {"drain": "{name} is draining: running jobs finish, nothing new starts there.",
               "resume": "{name} is back in service. Slurm pings it first, so for a few seconds it may show "
                         "as not responding."}


def _forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "core/forbidden.html", {"message": "Only admins drain and resume nodes.",
                                                   "back_url": reverse("nodes:list"), "back_label": "Back to nodes"},
                  status=403)


def _run(kind: str, node: Node, reason: str, actor) -> None:
    if kind == "drain":
        services.drain_node(node=node, reason=reason, actor=actor)
    else:
        services.resume_node(node=node, reason=reason, actor=actor)


def _act(request: HttpRequest, name: str, kind: str) -> HttpResponse:
    if not access.is_admin(request.user):
        return _forbidden(request)
    node = _node_or_404(name)
    form = NodeActionForm(request.POST)
    if form.is_valid():
        try:
            _run(kind, node, form.cleaned_data["reason"], request.user)
        except services.NodeActionRefused as exc:
            form.add_error("reason", str(exc))
        except SlurmError as exc:
            messages.error(request, slurm_error_text(exc))
        else:
            messages.success(request, ACTION_DONE[kind].format(name=node.name))
        finally:
            queries.forget_live_nodes()
    if form.errors:  # keep what was typed, next to the error
        context = {**_detail_context(request, node), "form": form}
        return render(request, "nodes/detail.html", context, status=400)
    if form.cleaned_data.get("back") == "list":
        return redirect("nodes:list")
    return redirect("nodes:detail", name=node.name)


@login_required
@require_POST
def node_drain(request: HttpRequest, name: str) -> HttpResponse:
    return _act(request, name, "drain")


@login_required
@require_POST
def node_resume(request: HttpRequest, name: str) -> HttpResponse:
    return _act(request, name, "resume")
